"""Progress of a whole pipeline run: which stage, how far (training steps, avatars), and a closing summary.

:class:`RunProgress` is the small interface :class:`~lensa_for_all.Pipeline` reports to; an app can
pass its own (e.g. to push events to a web page). :class:`RichRunProgress` draws it on the terminal
with rich; :class:`SilentProgress` shows nothing (``quiet``).
"""

from __future__ import annotations

import sys
from typing import IO, Any

__all__ = ["RunProgress", "SilentProgress", "RichRunProgress", "STAGE_LABELS", "duration_text"]

STAGE_LABELS = {"photos": "prepare photos", "train": "train", "generate": "generate avatars"}


class RunProgress:
    """Receives a run's events. Every method is optional to override; the base class ignores them all."""

    def stage_started(self, stage: str, *, total: int | None = None, detail: str = "") -> None:
        """A stage begins; ``total`` is its number of units when known (avatars), else ``None``."""

    def stage_progress(self, stage: str, completed: int, total: int | None, *, info: str = "") -> None:
        """``completed`` of ``total`` units (training steps, avatars); ``info`` is a short status (loss)."""

    def stage_finished(self, stage: str, *, seconds: float, reused: bool, detail: str = "") -> None:
        """A stage ended: ran for ``seconds``, or was ``reused`` from an earlier run of the same inputs."""

    def message(self, text: str) -> None:
        """A line for the user (a re-attached job, a stage that re-runs because its inputs changed)."""

    def close(self) -> None:
        """The run ended (finished, failed or interrupted)."""


class SilentProgress(RunProgress):
    """Shows nothing."""


class RichRunProgress(RunProgress):
    """One rich progress bar per running stage on stderr, and a line per finished stage."""

    def __init__(self, file: IO[str] | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=file or sys.stderr)
        self._progress: Any = None
        self._task: Any = None

    def _bar(self) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                      console=self.console, transient=True)
            self._progress.start()
        return self._progress

    def stage_started(self, stage: str, *, total: int | None = None, detail: str = "") -> None:
        label = STAGE_LABELS.get(stage, stage)
        self._task = self._bar().add_task(label, total=total, info=detail)

    def stage_progress(self, stage: str, completed: int, total: int | None, *, info: str = "") -> None:
        if self._task is not None:
            self._bar().update(self._task, completed=completed, total=total, info=info)

    def stage_finished(self, stage: str, *, seconds: float, reused: bool, detail: str = "") -> None:
        if self._task is not None and self._progress is not None:
            self._progress.remove_task(self._task)
            self._task = None
        label = STAGE_LABELS.get(stage, stage)
        how = "reused from the earlier run" if reused else f"done in {duration_text(seconds)}"
        self.console.print(f"[green]\u2713[/green] {label}: {how}" + (f" ({detail})" if detail else ""),
                           soft_wrap=True, highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False, markup=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def duration_text(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s`` or ``1 h 02 min``."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
