"""The one interface between the training loop and where it runs.

A backend receives a *packaged source dir* (written by ``DreamBoothTrainer.package_source_dir``) and
named input channels, runs the entry point under the SageMaker training-container contract, and hands
back a :class:`TrainingResult`. It knows nothing about diffusion; the loop knows nothing about AWS.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "Backend", "ProgressCallback", "TrainingProgress", "TrainingResult", "PROGRESS_PREFIX",
    "format_progress_line", "parse_progress_line",
]

# The entry point prints one line per progress report; LocalBackend reads them from the subprocess and
# SageMakerBackend from CloudWatch, so both show the same progress bar.
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


ProgressCallback = Callable[[TrainingProgress], None]


@attrs.frozen
class TrainingResult:
    """What a finished training run produced.

    ``output_dir`` is the local artifact folder (for SageMaker: where ``model.tar.gz`` was extracted,
    or ``None`` when the caller kept only the S3 URI).
    """

    output_dir: Path | None
    metrics: Mapping[str, Any] = attrs.field(factory=dict)
    log_path: Path | None = None
    job_name: str | None = None
    artifact_uri: str | None = None
    cost_usd: float | None = None
    backend: str = "local"


class Backend(abc.ABC):
    """Runs a packaged training entry point somewhere."""

    name: str = "backend"

    @abc.abstractmethod
    def run(
        self,
        source_dir: Path,
        channels: Mapping[str, Path],
        output_dir: Path,
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
    ) -> TrainingResult:
        """Run ``source_dir``'s entry point with ``channels`` (name -> local folder) as inputs.

        ``output_dir`` is where the artifacts must end up on this machine (the run folder's model dir).
        """
