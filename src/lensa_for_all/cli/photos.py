"""``lensa-for-all check`` and ``lensa-for-all prepare``: the photo check and the prepared training set."""

from __future__ import annotations

import argparse
from typing import Any

EXIT_USABLE = 0
EXIT_UNUSABLE = 1


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", metavar="PHOTOS", help="folder holding the photos of one subject")
    parser.add_argument("--class", dest="subject_class", default="person",
                        help="what the photos show: person (default; faces are checked), or pet, dog, cat, ...")
    parser.add_argument("--subject-kind", choices=("person", "pet", "object"), default=None,
                        help="person, pet or object: needed only for a class lensa-for-all does not list")
    parser.add_argument("--min-photos", type=int, default=4, help="fewest usable photos to accept (default 4)")
    parser.add_argument("--min-side", type=int, default=256,
                        help="reject photos whose short side is under this many pixels (default 256)")
    parser.add_argument("--likeness", action=argparse.BooleanOptionalAction, default=None,
                        help="compare the faces so a photo of someone else is flagged (default: when the "
                             "likeness extra is installed; --likeness requires it)")


def register(subparsers: Any) -> None:
    check = subparsers.add_parser("check", help="check a folder of photos and print the QC report",
                                  description="Check a folder of photos: exit 0 if usable, 1 if not.")
    _common(check)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=run_check)

    prepare = subparsers.add_parser("prepare", help="check photos and write square PNGs + manifest.json",
                                    description="Write the accepted photos as square RGB PNGs into --out.")
    _common(prepare)
    prepare.add_argument("--out", required=True, help="output folder (outside the photo folder)")
    prepare.add_argument("--resolution", type=int, default=512, help="side of the square PNGs (default 512)")
    prepare.set_defaults(func=run_prepare)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The PhotoSet and its report; a set with too few photos gives (None, its report)."""
    from ..errors import TooFewPhotosError
    from ..photos import PhotoSet
    from ..subjects import resolve_subject

    subject = resolve_subject(args.subject_class, args.subject_kind, class_option="--class",
                              kind_option="--subject-kind")
    try:
        ps = PhotoSet.from_folder(args.photos, subject_class=subject.name, min_photos=args.min_photos,
                                  min_side=args.min_side, subject_kind=subject.kind,
                                  likeness=getattr(args, "likeness", None))
    except TooFewPhotosError as exc:
        if exc.report is None:
            raise
        return None, exc.report
    return ps, ps.report()


def run_check(args: argparse.Namespace) -> int:
    _, report = _load(args)
    if args.json:
        print(report.to_json())
    elif not args.quiet or not report.usable:
        report.print()
    return EXIT_USABLE if report.usable else EXIT_UNUSABLE


def run_prepare(args: argparse.Namespace) -> int:
    ps, report = _load(args)
    if not args.quiet or ps is None:
        report.print()
    if ps is None:
        return EXIT_UNUSABLE
    out = ps.prepare(args.out, resolution=args.resolution)
    print(f"Prepared {len(ps.photos)} photos in {out}")
    return EXIT_USABLE
