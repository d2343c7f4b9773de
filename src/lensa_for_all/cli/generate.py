"""``lensa-for-all prompts`` and ``lensa-for-all generate``: style prompts and avatar packs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import UsageError

EXIT_INTERRUPTED = 130


def _styles_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--styles", nargs="+", metavar="STYLE",
                        help="style or group names (default: all); see `lensa-for-all prompts --list`")
    parser.add_argument("--catalogue", metavar="FILE", help="a JSON style catalogue to add to the built-in one")
    parser.add_argument("--magic", action="store_true",
                        help="expand prompts with MagicPrompt (GPT-2); fails if the model cannot be loaded")
    parser.add_argument("--magic-model", metavar="ID_OR_DIR", help="MagicPrompt model id or folder")


def register(subparsers: Any) -> None:
    prompts = subparsers.add_parser(
        "prompts", help="print avatar prompts from the style catalogue",
        description="Print prompts for a subject from the curated style catalogue (one per line, or JSON).",
    )
    prompts.add_argument("--class", dest="subject_class", default="person",
                         help="person (default), man, woman, dog, cat, pet, ...")
    prompts.add_argument("--subject-kind", choices=("person", "pet", "object"), default=None,
                         help="person, pet or object: needed only for a class lensa-for-all does not list")
    prompts.add_argument("--token", default="ohwx", help="the subject's rare token (default ohwx)")
    prompts.add_argument("-n", type=int, default=20, help="how many prompts (default 20)")
    prompts.add_argument("--seed", type=int, help="seed for the style order and MagicPrompt")
    prompts.add_argument("--tokenizer", metavar="MODEL_DIR", help="count CLIP tokens with this model's tokenizer")
    prompts.add_argument("--list", action="store_true", help="list the styles and groups instead")
    prompts.add_argument("--json", action="store_true", help="print JSON (text, negative, style, settings)")
    _styles_arg(prompts)
    prompts.set_defaults(func=run_prompts)

    gen = subparsers.add_parser(
        "generate", help="render an avatar pack from a trained model",
        description="Render avatars from MODEL (a trained folder, an s3:// model.tar.gz, a Hub id, or "
                    "endpoint:NAME for a SageMaker endpoint) into --out, with PNG metadata, avatars.json and "
                    "a contact sheet.",
    )
    gen.add_argument("model", metavar="MODEL",
                     help="a trained model folder, an s3:// model.tar.gz, a Hub id, or endpoint:NAME")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("-n", "--num-images", type=int, default=40, help="number of avatars (default 40)")
    gen.add_argument("--seed", type=int, help="seed of the first image; image i gets seed+i (default: random)")
    gen.add_argument("--prompt", action="append", metavar="TEXT",
                     help="use this prompt instead of the catalogue (repeatable)")
    gen.add_argument("--negative-prompt", help="replace the default negative prompt")
    gen.add_argument("--steps", dest="num_inference_steps", type=int, help="denoising steps (default per sampler)")
    gen.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default per style, ~7.5)")
    gen.add_argument("--width", type=int, metavar="PX",
                     help="image width, a multiple of 8 (default: the model's training resolution)")
    gen.add_argument("--height", type=int, metavar="PX",
                     help="image height, a multiple of 8 (default: the model's training resolution)")
    gen.add_argument("--scheduler", help="dpmpp_2m_karras (default), euler_a, ddim, unipc, ...")
    gen.add_argument("--lora-scale", type=float, help="strength of a LoRA model (default 1.0)")
    gen.add_argument("--batch-size", type=int, help="images per pipeline call (default: what memory allows)")
    gen.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    gen.add_argument("--dtype", help="fp16, bf16 or fp32 (default: fp16 on GPUs, fp32 on CPU)")
    gen.add_argument("--base-model", help="base model for a LoRA folder (overrides its manifest)")
    gen.add_argument("--no-safety-checker", action="store_true", help="switch off the model's safety checker")
    gen.add_argument("--class", dest="subject_class", help="override the model's subject class for prompts")
    gen.add_argument("--token", help="override the model's token for prompts")
    gen.add_argument("--keep-best", type=int, metavar="N",
                     help="keep the N of the -n rendered avatars that look most like the subject (face likeness "
                          "against --photos; needs the likeness extra)")
    gen.add_argument("--photos", metavar="DIR", help="the subject's photos, for --keep-best")
    _styles_arg(gen)
    gen.set_defaults(func=run_generate)


def run_prompts(args: argparse.Namespace) -> int:
    from ..prompts import PromptGenerator
    from ..subjects import resolve_subject

    subject = resolve_subject(args.subject_class, args.subject_kind, class_option="--class",
                              kind_option="--subject-kind")
    gen = PromptGenerator(args.token, subject.name, subject_kind=subject.kind, extra_catalogue=args.catalogue,
                          tokenizer=args.tokenizer, **_magic_model(args))
    if args.list:
        for group in gen.catalogue.groups():
            names = [s.name for s in gen.catalogue if s.group == group]
            print(f"{group}: {', '.join(names)}")
        return 0
    prompts = gen.generate(args.n, styles=args.styles, magic=bool(args.magic), seed=args.seed)
    if args.json:
        print(json.dumps([p.to_dict() for p in prompts], indent=2))
    else:
        for p in prompts:
            print(p.text)
    return 0


def _magic_model(args: argparse.Namespace) -> dict[str, Any]:
    return {"magic_model": args.magic_model} if getattr(args, "magic_model", None) else {}


def _check_keep_best(args: argparse.Namespace) -> dict[str, Any]:
    """``generate``'s keep_best arguments, checked before the model is loaded (which takes a while)."""
    if args.keep_best is None:
        if args.photos:
            raise UsageError("--photos is only used with --keep-best N.")
        return {}
    from ..errors import LikenessUnavailable
    from ..likeness import INSTALL_HINT, is_available

    if not args.photos:
        raise UsageError("--keep-best needs --photos DIR: the subject's photos to compare faces with.")
    if not is_available():
        raise LikenessUnavailable(f"--keep-best scores faces with dlib; install it: {INSTALL_HINT}")
    return {"keep_best": args.keep_best, "references": args.photos}


def run_generate(args: argparse.Namespace) -> int:
    from ..generation import AvatarModel
    from ..quiet import route_library_output

    route_library_output(verbose=args.verbose)  # the libraries' loading bars and warnings only with -v

    best = _check_keep_best(args)
    if args.model.startswith("endpoint:"):
        model = AvatarModel.from_endpoint(args.model.split(":", 1)[1], token=args.token,
                                          subject_class=args.subject_class)
    else:
        model = AvatarModel.load(args.model, device=args.device, dtype=args.dtype, base_model=args.base_model,
                                 safety_checker=False if args.no_safety_checker else None)
    prompts: Any
    extra: dict[str, Any] = {}
    if args.prompt:
        prompts = args.prompt
    else:
        gen_kwargs: dict[str, Any] = {"extra_catalogue": args.catalogue, **_magic_model(args)}
        if args.subject_class:
            gen_kwargs["subject_class"] = args.subject_class
        if args.token:
            gen_kwargs["token"] = args.token
        prompts = model.prompt_generator(**gen_kwargs)
        extra = {"styles": args.styles, "magic": bool(args.magic)}
    pack = model.generate(
        prompts, args.num_images, seed=args.seed, negative_prompt=args.negative_prompt,
        num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, width=args.width,
        height=args.height, scheduler=args.scheduler, lora_scale=args.lora_scale, batch_size=args.batch_size,
        progress=not args.quiet and sys.stderr.isatty(), out_dir=args.out, **extra, **best,
    )
    print(f"{len(pack)} of {pack.requested} avatars written to {args.out}")
    if pack.interrupted:
        print("interrupted: the finished avatars were kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
