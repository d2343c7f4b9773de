"""Entry point of the ``lensa-for-all`` command.

Command modules are imported here, but each keeps its heavy imports inside its ``run`` function so
``lensa-for-all --help`` stays fast and imports no torch, diffusers or boto3.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import LensaError, UsageError
from ..quiet import configure_console
from ..version import __version__

# Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_ERROR = 1  # a LensaError: bad input, unusable photo set, failed job, ...
EXIT_USAGE = 2  # argparse's own code for bad arguments; also a UsageError (unknown class or style, ...)
EXIT_INTERRUPTED = 130

# Modules under lensa_for_all.cli that define ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "generate",
    "endpoints",
    "photos",
    "run",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lensa-for-all",
        description="Turn 4-20 photos of a person or pet into styled avatars with DreamBooth.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs and full tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors and results")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_console(verbose=args.verbose, quiet=args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or EXIT_OK)
    except UsageError as exc:  # a value naming nothing that exists (a class, a style), a missing argument
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LensaError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
