"""Every command and every argument of ``lensa-for-all`` has help text; the demo's time claim is the measured one."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from lensa_for_all.cli.main import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_every_argument_of_every_command_has_help() -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"run", "demo", "train", "generate", "prompts", "check", "prepare"} <= set(commands)
    missing = []
    for name, sub in {"": parser, **commands}.items():
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_run_and_train_take_the_same_sagemaker_flags() -> None:
    commands = _subparsers(build_parser())
    for name in ("run", "train"):
        options = {o for a in commands[name]._actions for o in a.option_strings}
        assert {"--region", "--profile", "--instance-type", "--spot", "--no-spot", "--max-cost", "--subject-kind",
                "--backend", "--config"} <= options, name


def test_demo_help_claims_the_time_measured_in_benchmarks() -> None:
    demo_help = _subparsers(build_parser())["demo"].format_help()
    claim = re.search(r"CPU, about (\d+) (?:min|s)", " ".join(demo_help.split()))
    assert claim, demo_help
    readme = (Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert f"demo help says \"about {claim.group(1)} " in readme
