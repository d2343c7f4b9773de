"""``lensa-for-all train``: DreamBooth fine-tuning on this machine, with a progress bar."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="fine-tune Stable Diffusion on a folder of photos (DreamBooth, LoRA or full)",
        description="Train a DreamBooth model on PHOTOS and write the artifacts to --out. Settings come from "
                    "the preset for --class, then --config, then the flags, then --set.",
    )
    p.add_argument("photos", metavar="PHOTOS", help="folder of photos (raw, or prepared by `lensa-for-all prepare`)")
    p.add_argument("--class", dest="subject_class", default=None, help="person (default), dog, cat, ...")
    p.add_argument("--out", required=True, help="artifact folder to write")
    p.add_argument("--method", choices=("lora", "full"), default=None, help="lora (default) or full fine-tuning")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: from the number of photos)")
    p.add_argument("--base-model", default=None, help="Hub id or local folder of an SD 1.x/2.x pipeline")
    p.add_argument("--config", default=None, help="training_config.json to start from")
    p.add_argument("--resolution", type=int, default=None, help="training resolution in pixels (default 512)")
    p.add_argument("--token", default=None, help="rare identifier word for the subject (default ohwx)")
    p.add_argument("--class-images", default=None, help="folder of your own class images for prior preservation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any TrainingConfig field, e.g. --set learning_rate=5e-5 (repeatable)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    from ..config import TrainingConfig
    from ..errors import ConfigError

    flags = {"max_train_steps": args.steps, "base_model": args.base_model, "resolution": args.resolution,
             "token": args.token}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.config:
        config = TrainingConfig.from_json(Path(args.config))
        if args.method:
            flags["method"] = args.method
        if args.subject_class:
            flags["subject_class"] = args.subject_class
        config = config.replace(**flags)
    else:
        config = TrainingConfig.for_subject(args.subject_class or "person", args.method or "lora", **flags)
    sets: dict[str, str] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        sets[key.strip()] = value
    return config.with_hyperparameters(sets) if sets else config


def _prepared(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def run(args: argparse.Namespace) -> int:
    from ..backends.local import progress_bar
    from ..trainer import DreamBoothTrainer

    config = build_config(args)
    photos: Any = Path(args.photos)
    if not _prepared(photos):
        from ..photos import PhotoSet

        photos = PhotoSet.from_folder(photos, subject_class=config.subject_class)
    trainer = DreamBoothTrainer(config)
    with progress_bar(disable=bool(args.quiet)) as progress:
        result = trainer.train(photos, output_dir=Path(args.out),
                               class_images=Path(args.class_images) if args.class_images else None,
                               progress=progress)
    if not args.quiet:
        loss = result.metrics.get("final_loss")
        print(f"model written to {result.output_dir} ({result.metrics.get('steps')} steps"
              + (f", final loss {loss:.4f})" if isinstance(loss, float) else ")"))
        print(f"log: {result.log_path}")
    return 0
