"""``lensa-for-all export``: a trained model as the files A1111, ComfyUI, diffusers or the Hub load."""

from __future__ import annotations

import argparse
from typing import Any

FORMATS = ("a1111", "comfyui", "diffusers", "hub")  # lensa_for_all.exports.EXPORT_FORMATS, without importing it


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export", help="write a trained model as the files A1111, ComfyUI, diffusers or the Hub load",
        description="Export MODEL (a folder `lensa-for-all train` wrote) into DIR for one tool: a1111 and comfyui "
                    "get the kohya LoRA or the single-file checkpoint, diffusers the diffusers layout, hub a folder "
                    "ready for `hf upload`. Prints where each file goes; never replaces a file without --force.",
    )
    p.add_argument("model", metavar="MODEL", help="the trained model folder")
    p.add_argument("--format", dest="tool", required=True, choices=FORMATS, help="the tool to export for")
    p.add_argument("dest", metavar="DIR", help="folder to write the export into")
    p.add_argument("--force", action="store_true", help="replace files DIR already holds")
    p.add_argument("--fp32", action="store_true",
                   help="full fine-tunes: write the single-file checkpoint in fp32 (default fp16, half the size)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..exports import export_model

    result = export_model(args.model, args.tool, args.dest, force=args.force,
                          precision="fp32" if args.fp32 else "fp16")
    for line in result.instructions:
        print(line)
    return 0
