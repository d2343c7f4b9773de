"""``lensa-for-all run`` (photos to avatars in one resumable command) and ``lensa-for-all demo`` (offline)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_INTERRUPTED = 130


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="photos to avatars: check and prepare the photos, train, generate (resumable)",
        description="Check and prepare PHOTOS, train a DreamBooth model on them, and render an avatar pack into "
                    "--out. Running the same command again continues after the last finished stage. Settings "
                    "come from the config file, then LENSA_* environment variables, then these flags.",
    )
    run.add_argument("photos", metavar="PHOTOS", nargs="?", help="folder holding 4-20 photos of one subject")
    run.add_argument("--class", dest="subject_class", help="person (default), man, woman, dog, cat, ...")
    run.add_argument("--out", help="folder for the avatars (env LENSA_OUT); the run folder defaults to OUT/run")
    run.add_argument("--backend", choices=("local", "sagemaker"), help="where to train (default local)")
    run.add_argument("-n", "--num-images", type=int, help="number of avatars (default 40)")
    run.add_argument("--styles", nargs="+", metavar="STYLE",
                     help="style or group names (default: all); see `lensa-for-all prompts --list`")
    run.add_argument("--method", choices=("lora", "full"), help="lora (default) or full fine-tuning")
    run.add_argument("--steps", type=int, help="training steps (default: from the number of photos)")
    run.add_argument("--base-model", metavar="ID|PATH", help="Hub id or local folder of an SD 1.x/2.x pipeline")
    run.add_argument("--seed", type=int, help="seed of the first avatar (default: random, kept on resume)")
    run.add_argument("--run-dir", metavar="DIR", help="run folder for the state, prepared photos and model")
    run.add_argument("--config", metavar="FILE", help="TOML settings file (default ./lensa.toml or the user file)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its own settings")
    run.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    run.set_defaults(func=run_run)

    demo = subparsers.add_parser(
        "demo", help="run every stage offline on sample photos and a tiny random model (CPU, ~2 min)",
        description="Build a small random-weight model and sample photos, then run the real pipeline on them: "
                    "photo check, LoRA training, avatars and a contact sheet. Needs no GPU and no download. "
                    "The avatars are noise: the weights are random.",
    )
    demo.add_argument("--out", default=None, help="demo folder (default ./demo-out)")
    demo.add_argument("--size", choices=("tiny", "small"), default=None, help="demo model size (default tiny: 64 px; small: SD-shaped, 128 px, slower)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default 30)")
    demo.add_argument("-n", "--num-images", type=int, default=None, help="number of avatars (default 6)")
    demo.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    demo.set_defaults(func=run_demo)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"backend": args.backend, "subject_class": args.subject_class, "method": args.method,
            "base_model": args.base_model, "steps": args.steps, "num_images": args.num_images,
            "styles": args.styles, "out": args.out, "run_dir": args.run_dir, "seed": args.seed}


def _print_result(result: Any, args: argparse.Namespace, extra: dict[str, Any] | None = None) -> None:
    if args.json:
        print(json.dumps({**result.to_dict(), **(extra or {})}, indent=2))
    elif args.quiet:
        print(f"{len(result.avatars)} avatars in {result.out_dir}")
    # otherwise the progress display has already shown the summary


def _quiet_libraries(args: argparse.Namespace) -> None:
    """Hide diffusers' and transformers' own loading bars under ours (``--verbose`` keeps them)."""
    if args.verbose:
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def run_run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..pipeline import Pipeline

    _quiet_libraries(args)
    try:
        if args.resume:
            if args.photos:
                raise ConfigError("Pass either PHOTOS or --resume RUN_DIR, not both.")
            result = Pipeline.resume(args.resume, progress=not args.quiet)
        else:
            from ..settings import load_settings

            settings = load_settings(args.config, flags=_flags(args))
            if not args.photos:
                raise ConfigError("Name the photo folder: lensa-for-all run PHOTOS --out DIR (or --resume RUN_DIR).")
            if not settings.out and not settings.run_dir:
                raise ConfigError("Say where the avatars go: --out DIR (or LENSA_OUT, or out = \"...\" in the "
                                  "config file).")
            pipeline = Pipeline.from_folder(
                args.photos, subject_class=settings.subject_class, backend=settings.backend, method=settings.method,
                base_model=settings.base_model, steps=settings.steps, run_dir=settings.run_dir,
                sagemaker=settings.sagemaker, progress=not args.quiet, **dict(settings.training),
            )
            result = pipeline.run(num_images=settings.num_images, styles=list(settings.styles) or None,
                                  out_dir=settings.out, seed=settings.seed, **dict(settings.generation))
    except KeyboardInterrupt:
        print("interrupted: finished stages and avatars are kept; run the same command again to continue.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_result(result, args)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .. import demo

    _quiet_libraries(args)
    options: dict[str, Any] = {}
    if args.size:
        options["size"] = args.size
    if args.steps:
        options["steps"] = args.steps
    if args.num_images:
        options["num_images"] = args.num_images
    try:
        result = demo.run_demo(args.out or demo.DEFAULT_DEMO_DIR, progress=not args.quiet, **options)
    except KeyboardInterrupt:
        print("interrupted: run `lensa-for-all demo` again to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        _print_result(result, args, {"random_weights": True, "next": demo.NEXT_COMMAND})
        return 0
    _print_result(result, args)
    if not args.quiet:
        print()
        print(demo.RANDOM_WEIGHTS_NOTICE)
        print("\nWith your own photos and a GPU (or --backend sagemaker), run:")
        print(f"  {demo.NEXT_COMMAND}")
    return 0
