"""``lensa-for-all endpoints list|delete``: find and remove the endpoints this library created.

An endpoint bills every hour it exists, used or not; this is how a forgotten one is found.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("endpoints", help="list or delete SageMaker endpoints created by lensa-for-all",
                                   description="Find and delete the SageMaker endpoints lensa-for-all created "
                                   "(an endpoint bills every hour it exists).")
    parser.add_argument("--region", help="AWS region (default: from your AWS config)")
    parser.add_argument("--profile", help="AWS profile name")
    actions = parser.add_subparsers(dest="endpoints_action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="list endpoints tagged as created by lensa-for-all")
    ls.set_defaults(func=run)
    rm = actions.add_parser("delete", help="delete endpoints (with their config and model)")
    rm.add_argument("names", nargs="*", help="endpoint names (see `endpoints list`)")
    rm.add_argument("--all", action="store_true", help="delete every endpoint lensa-for-all created")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..backends.aws_session import AWSSession
    from ..backends.endpoint import Endpoint, list_endpoints
    from ..errors import LensaError

    session = AWSSession(args.region, profile=args.profile)
    if args.endpoints_action == "list":
        endpoints = list_endpoints(session)
        if not endpoints:
            print(f"No lensa-for-all endpoints in {session.region}.")
            return 0
        print(f"{'NAME':<48} {'STATUS':<12} {'INSTANCE':<16} CREATED")
        for e in endpoints:
            print(f"{e.name:<48} {e.status:<12} {e.instance_type or '?':<16} {e.created}")
        return 0
    ours = {e.name: e for e in list_endpoints(session)}
    names = list(ours) if args.all else list(args.names)
    if not names:
        raise LensaError("Name the endpoints to delete, or pass --all")
    unknown = [n for n in names if n not in ours]
    if unknown:
        raise LensaError(f"Not endpoints created by lensa-for-all in {session.region}: {', '.join(unknown)} "
                         "(see `lensa-for-all endpoints list`)")
    if not args.yes:
        if not sys.stdin.isatty():
            raise LensaError("Refusing to delete without confirmation; pass --yes")
        answer = input(f"Delete {len(names)} endpoint(s): {', '.join(names)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return 0
    for name in names:
        info = ours[name]
        Endpoint(name, session=session, model_name=info.model_name, config_name=info.config_name,
                 owned=True).delete()
        print(f"deleted {name}")
    return 0
