"""``lensa-for-all run`` (photos to avatars in one resumable command) and ``lensa-for-all demo`` (offline)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..subjects import SUBJECT_KINDS

EXIT_INTERRUPTED = 130


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="photos to avatars: check and prepare the photos, train, generate (resumable)",
        description="Check and prepare PHOTOS, train a DreamBooth model on them, and render an avatar pack into "
                    "--out. Running the same command again continues after the last finished stage. Settings "
                    "come from the config file, then LENSA_* environment variables, then these flags.",
    )
    run.add_argument("photos", metavar="PHOTOS", nargs="?", help="folder holding 4-20 photos of one subject")
    run.add_argument("--class", dest="subject_class", metavar="CLASS",
                     help="what the photos show: person (default), man, woman, dog, cat, teddy bear, ...")
    run.add_argument("--subject-kind", choices=SUBJECT_KINDS,
                     help="person, pet or object: needed only for a class lensa-for-all does not list")
    run.add_argument("--out", help="folder for the avatars (env LENSA_OUT); the run folder defaults to OUT/run")
    run.add_argument("--backend", choices=("local", "sagemaker"), help="where to train (default local)")
    run.add_argument("-n", "--num-images", type=int, help="number of avatars (default 40)")
    run.add_argument("--styles", nargs="+", metavar="STYLE",
                     help="style or group names (default: all); see `lensa-for-all prompts --list`")
    run.add_argument("--method", choices=("lora", "full"), help="lora (default) or full fine-tuning")
    run.add_argument("--steps", type=int, help="training steps (default: from the number of photos)")
    run.add_argument("--base-model", metavar="ID|PATH", help="Hub id or local folder of an SD 1.x/2.x pipeline")
    run.add_argument("--seed", type=int, help="seed of the first avatar (default: random, kept on resume)")
    run.add_argument("--keep-best", type=int, metavar="N",
                     help="render NUM_IMAGES candidates and keep the N most like the subject (needs [likeness])")
    run.add_argument("--run-dir", metavar="DIR", help="run folder for the state, prepared photos and model")
    run.add_argument("--config", metavar="FILE", help="TOML settings file (default ./lensa.toml or the user file)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its own settings")
    run.add_argument("--dry-run", action="store_true",
                     help="check everything and print the plan (stages, photos, steps, time, cost); run nothing")
    add_sagemaker_flags(run)
    run.add_argument("--json", action="store_true", help="print the result (or the plan) as JSON on stdout")
    run.set_defaults(func=run_run)

    demo = subparsers.add_parser(
        "demo", help="run every stage offline on sample photos and a tiny random model (CPU, about 1 min)",
        description="Build a small random-weight model and sample photos, then run the real pipeline on them: "
                    "photo check, LoRA training, avatars and a contact sheet. Needs no GPU and no download "
                    "(CPU, about 1 min on two cores: benchmarks/README.md, \"CPU threads\"). "
                    "The avatars are noise: the weights are random.",
    )
    demo.add_argument("--out", default=None, help="demo folder (default ./demo-out)")
    demo.add_argument("--size", choices=("tiny", "small"), default=None, help="demo model size (default tiny: 64 px; small: SD-shaped, 128 px, slower)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default 30)")
    demo.add_argument("-n", "--num-images", type=int, default=None, help="number of avatars (default 6)")
    demo.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    demo.set_defaults(func=run_demo)


def _dollars(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of US dollars, e.g. 3 or 2.50, not {text!r}")
    return value


def add_sagemaker_flags(parser: argparse.ArgumentParser) -> None:
    """The SageMaker flags ``run`` and ``train`` share (each also has an env var and a config key)."""
    group = parser.add_argument_group("SageMaker (with --backend sagemaker)")
    group.add_argument("--region", help="AWS region, e.g. us-east-1 (env LENSA_REGION; default: AWS_DEFAULT_REGION "
                                        "or your AWS profile's region)")
    group.add_argument("--profile", help="AWS profile from ~/.aws/config (env LENSA_PROFILE; default: AWS_PROFILE)")
    group.add_argument("--instance-type", metavar="TYPE",
                       help="training instance, e.g. ml.g5.2xlarge (default; env LENSA_INSTANCE_TYPE)")
    group.add_argument("--spot", action=argparse.BooleanOptionalAction, default=None,
                       help="managed spot instances, 60-70%% cheaper (default on; env LENSA_SPOT)")
    group.add_argument("--max-cost", type=_dollars, metavar="USD",
                       help="refuse to start, and stop, a job whose cost would pass USD (env LENSA_MAX_COST_USD)")


def sagemaker_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The SageMaker flags given on the command line, as ``[sagemaker]`` settings."""
    given = {"region": args.region, "profile": args.profile, "instance_type": args.instance_type,
             "spot": args.spot, "max_cost_usd": args.max_cost}
    return {k: v for k, v in given.items() if v is not None}


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"backend": args.backend, "subject_class": args.subject_class, "subject_kind": args.subject_kind,
            "method": args.method, "base_model": args.base_model, "steps": args.steps,
            "num_images": args.num_images, "styles": args.styles, "out": args.out, "run_dir": args.run_dir,
            "seed": args.seed, "sagemaker": sagemaker_flags(args)}


def _print_result(result: Any, args: argparse.Namespace, extra: dict[str, Any] | None = None) -> None:
    if args.json:
        print(json.dumps({**result.to_dict(), **(extra or {})}, indent=2))
    elif args.quiet:
        print(f"{len(result.avatars)} avatars in {result.out_dir}")
    # otherwise the progress display has already shown the summary


def _pipeline_and_arguments(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The pipeline the flags (or ``--resume``) describe and the arguments of its ``run``."""
    from ..errors import UsageError
    from ..pipeline import Pipeline

    if args.resume:
        if args.photos:
            raise UsageError("Pass either PHOTOS or --resume RUN_DIR, not both.")
        from ..pipeline.state import RunState

        pipeline = Pipeline.load(args.resume, progress=not args.quiet)
        return pipeline, dict(RunState.load(args.resume).run.get("args", {}))
    from ..pipeline.settings import load_settings
    from ..subjects import resolve_subject

    settings = load_settings(args.config, flags=_flags(args))
    if not args.photos:
        raise UsageError("Name the photo folder: lensa-for-all run PHOTOS --out DIR (or --resume RUN_DIR).")
    if not settings.out and not settings.run_dir:
        raise UsageError("Say where the avatars go: --out DIR (or LENSA_OUT, or out = \"...\" in the config file).")
    subject = resolve_subject(settings.subject_class, settings.subject_kind, class_option="--class",
                              kind_option="--subject-kind")
    pipeline = Pipeline.from_folder(
        args.photos, subject_class=subject.name, subject_kind=settings.subject_kind, backend=settings.backend,
        method=settings.method, base_model=settings.base_model, steps=settings.steps, run_dir=settings.run_dir,
        sagemaker=settings.sagemaker, progress=not args.quiet, **dict(settings.training),
    )
    arguments = {"num_images": settings.num_images, "styles": list(settings.styles) or None, "out_dir": settings.out,
                 "seed": settings.seed, **dict(settings.generation)}
    if args.keep_best is not None:
        arguments["keep_best"] = args.keep_best
    return pipeline, arguments


def run_run(args: argparse.Namespace) -> int:
    from ..cpu_threads import cpu_threads_for
    from ..pipeline.plan import CLI_NAMES
    from ..quiet import LOG_FILE, library_output_to_file, route_library_output

    route_library_output(verbose=args.verbose)
    pipeline, arguments = _pipeline_and_arguments(args)
    plan = pipeline.plan(**arguments, names=CLI_NAMES)  # fails here, in seconds, before anything is written
    if args.dry_run:
        print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.summary())
        return 0
    if not args.quiet:
        if plan.estimate is not None:
            print(f"cost: {plan.estimate}", file=sys.stderr)
        for note in plan.notes:
            print(f"note: {note}", file=sys.stderr)
    try:
        with library_output_to_file(plan.run_dir / LOG_FILE, verbose=args.verbose), \
                cpu_threads_for(pipeline.config.base_model):
            result = pipeline.run(**arguments)
    except KeyboardInterrupt:
        print("interrupted: finished stages and avatars are kept; run the same command again to continue.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_result(result, args)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import demo
    from ..quiet import LOG_FILE, library_output_to_file, route_library_output

    route_library_output(verbose=args.verbose)
    out = args.out or demo.DEFAULT_DEMO_DIR
    options: dict[str, Any] = {}
    if args.size:
        options["size"] = args.size
    if args.steps:
        options["steps"] = args.steps
    if args.num_images:
        options["num_images"] = args.num_images
    try:
        with library_output_to_file(Path(out) / "run" / LOG_FILE, verbose=args.verbose):
            result = demo.run_demo(out, progress=not args.quiet, **options)
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
