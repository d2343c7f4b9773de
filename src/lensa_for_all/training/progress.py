"""Training progress: the record the loop reports, its one-line log format, and a terminal bar for it.

The entry point prints one line per report; ``LocalBackend`` reads them from the subprocess and
``SageMakerBackend`` from CloudWatch, so both drive the same callback and the same bar.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import attrs

__all__ = [
    "PROGRESS_PREFIX", "ProgressCallback", "TrainingProgress", "format_progress_line", "parse_progress_line",
    "progress_bar",
]

PROGRESS_PREFIX = "LENSA_PROGRESS "


@attrs.frozen
class TrainingProgress:
    """One progress report from the loop (also printed by the entry point as a parseable log line)."""

    step: int
    total_steps: int
    loss: float | None = None
    lr: float | None = None
    seconds_per_step: float | None = None
    stage: str = "train"  # "class_images", "latents", "train", "validation", "save"


ProgressCallback = Callable[[TrainingProgress], None]


def format_progress_line(p: TrainingProgress) -> str:
    return PROGRESS_PREFIX + json.dumps(attrs.asdict(p), separators=(",", ":"))


def parse_progress_line(line: str) -> TrainingProgress | None:
    """Return the report in ``line`` (which may carry a log prefix), or ``None`` if it holds none."""
    idx = line.find(PROGRESS_PREFIX)
    if idx < 0:
        return None
    try:
        data = json.loads(line[idx + len(PROGRESS_PREFIX):])
        return TrainingProgress(**data)
    except (ValueError, TypeError):
        return None


@contextlib.contextmanager
def progress_bar(*, disable: bool = False, console: Any = None) -> Iterator[ProgressCallback]:
    """A rich progress bar (stage, step/total, loss, s/step, time left); yields the callback that drives it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description:<12}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, disable=disable, console=console) as bar:
        task = bar.add_task("starting", total=None, info="")

        def update(p: TrainingProgress) -> None:
            info = f"loss {p.loss:.4f}" if p.loss is not None else ""
            if p.seconds_per_step:
                info += f"  {p.seconds_per_step:.2f} s/step"
            bar.update(task, description=p.stage, completed=p.step, total=p.total_steps or None, info=info)

        yield update
