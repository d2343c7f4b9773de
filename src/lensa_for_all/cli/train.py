"""``lensa-for-all train``: DreamBooth fine-tuning on this machine, with a progress bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..subjects import SUBJECT_KINDS
from .run import add_sagemaker_flags, sagemaker_flags


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="fine-tune Stable Diffusion on a folder of photos (DreamBooth, LoRA or full)",
        description="Train a DreamBooth model on PHOTOS and write the artifacts to --out. Settings come from "
                    "the preset for --class, then --config, then the flags, then --set. Everything is checked "
                    "before training starts (photos, class, base model, device; region, credentials, role, "
                    "bucket and cost with --backend sagemaker).",
    )
    p.add_argument("photos", metavar="PHOTOS", help="folder of photos (raw, or prepared by `lensa-for-all prepare`)")
    p.add_argument("--class", dest="subject_class", default=None, metavar="CLASS",
                   help="what the photos show: person (default), man, woman, dog, cat, teddy bear, ...")
    p.add_argument("--subject-kind", choices=SUBJECT_KINDS, default=None,
                   help="person, pet or object: needed only for a class lensa-for-all does not list")
    p.add_argument("--out", required=True, metavar="DIR", help="artifact folder to write")
    p.add_argument("--backend", choices=("local", "sagemaker"), default=None,
                   help="where to train: local (default, this machine) or sagemaker")
    p.add_argument("--method", choices=("lora", "full"), default=None, help="lora (default) or full fine-tuning")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: from the number of photos)")
    p.add_argument("--base-model", default=None, metavar="ID|PATH",
                   help="Hub id or local folder of an SD 1.x/2.x pipeline")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a TOML settings file like `run`'s (its [training] and [sagemaker] tables are used), or a "
                        "saved training_config.json to start from")
    p.add_argument("--resolution", type=int, default=None, help="training resolution in pixels (default 512)")
    p.add_argument("--token", default=None, help="rare identifier word for the subject (default ohwx)")
    p.add_argument("--class-images", default=None, help="folder of your own class images for prior preservation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any TrainingConfig field, e.g. --set learning_rate=5e-5 (repeatable)")
    add_sagemaker_flags(p)
    p.set_defaults(func=run)


def _is_json(path: str) -> bool:
    if path.lower().endswith(".json"):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def build_settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """The TrainingConfig and the merged run settings (backend, ``[sagemaker]``) from file, env and flags."""
    from ..config import TrainingConfig
    from ..errors import UsageError
    from ..pipeline.settings import load_settings
    from ..subjects import resolve_subject

    json_config = args.config is not None and _is_json(args.config)
    flags = {"backend": args.backend, "subject_class": args.subject_class, "subject_kind": args.subject_kind,
             "method": args.method, "base_model": args.base_model, "steps": args.steps,
             "sagemaker": sagemaker_flags(args)}
    # a TOML file is read like `run`'s; a training_config.json is applied below, over the preset
    settings = load_settings(None if json_config else args.config, flags=flags)
    given = {"max_train_steps": settings.steps, "base_model": settings.base_model, "resolution": args.resolution,
             "token": args.token}
    given = {k: v for k, v in given.items() if v is not None}
    if json_config:
        config = TrainingConfig.from_json(Path(args.config))
        if args.method:
            given["method"] = args.method
        if args.subject_class:
            given["subject_class"] = resolve_subject(args.subject_class, args.subject_kind, class_option="--class",
                                                     kind_option="--subject-kind").name
        config = config.replace(**given)
    else:
        subject = resolve_subject(settings.subject_class, settings.subject_kind, class_option="--class",
                                  kind_option="--subject-kind")
        unknown = set(settings.training) & set(given)
        if unknown:
            raise UsageError(f"{sorted(unknown)} are set both by a flag and in [training]; keep one.")
        config = TrainingConfig.for_subject(subject.name, settings.method, subject_kind=settings.subject_kind,
                                            **{**dict(settings.training), **given})
    return _with_sets(config, args.overrides), settings


def build_config(args: argparse.Namespace) -> Any:
    """The TrainingConfig the flags, ``--config`` and ``--set`` describe."""
    return build_settings(args)[0]


def _with_sets(config: Any, overrides: list[str]) -> Any:
    from ..errors import UsageError

    sets: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        sets[key.strip()] = value
    return config.with_hyperparameters(sets) if sets else config


def _prepared(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def run(args: argparse.Namespace) -> int:
    from ..cpu_threads import cpu_threads_for
    from ..pipeline.plan import CLI_NAMES, check_training
    from ..quiet import LOG_FILE, library_output_to_file, route_library_output
    from ..training.progress import progress_bar
    from ..training.trainer import DreamBoothTrainer

    route_library_output(verbose=args.verbose)
    config, settings = build_settings(args)
    notes = check_training(config, args.photos, backend=settings.backend, sagemaker=settings.sagemaker,
                           names=CLI_NAMES)
    if not args.quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    photos: Any = Path(args.photos)
    out = Path(args.out)
    with library_output_to_file(out.with_name(out.name + ".work") / LOG_FILE, verbose=args.verbose), \
            cpu_threads_for(config.base_model):
        if not _prepared(photos):
            from ..photos import PhotoSet

            photos = PhotoSet.from_folder(photos, subject_class=config.subject_class,
                                          subject_kind=settings.subject_kind)
        backend = None
        if settings.backend == "sagemaker":
            from ..backends.sagemaker import SageMakerBackend

            backend = SageMakerBackend(**dict(settings.sagemaker))
        trainer = DreamBoothTrainer(config, backend=backend)
        with progress_bar(disable=bool(args.quiet)) as progress:
            result = trainer.train(photos, output_dir=out,
                                   class_images=Path(args.class_images) if args.class_images else None,
                                   progress=progress)
    if not args.quiet:
        loss = result.metrics.get("final_loss")
        print(f"model written to {result.output_dir} ({result.metrics.get('steps')} steps"
              + (f", final loss {loss:.4f})" if isinstance(loss, float) else ")"))
        print(f"log: {result.log_path}")
    return 0
