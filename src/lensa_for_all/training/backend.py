"""The one interface between the training loop and where it runs.

A backend receives a *packaged source dir* (written by ``DreamBoothTrainer.package_source_dir``) and
named input channels, runs the entry point under the SageMaker training-container contract, and hands
back a :class:`TrainingResult`. It knows nothing about diffusion; the loop knows nothing about AWS. The
interface lives with the training code that calls it; ``lensa_for_all.training.local`` and
``lensa_for_all.backends`` implement it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .progress import ProgressCallback

__all__ = ["Backend", "JobStartedCallback", "TrainingResult"]

# Called with a remote job's name the moment the job exists, before the backend waits for it, so that a
# caller can record it and re-attach after an interruption (``SageMakerBackend.attach``).
JobStartedCallback = Callable[[str], None]


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

    def work_dir_for(self, output_dir: Path) -> Path:
        """Where the trainer writes the source dir and prepared photos for a run whose model goes to ``output_dir``."""
        return output_dir.with_name(output_dir.name + ".work")

    @abc.abstractmethod
    def run(
        self,
        source_dir: Path,
        channels: Mapping[str, Path],
        output_dir: Path,
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        on_job_started: JobStartedCallback | None = None,
    ) -> TrainingResult:
        """Run ``source_dir``'s entry point with ``channels`` (name -> local folder) as inputs.

        ``output_dir`` is where the artifacts must end up on this machine (the run folder's model dir).
        A backend that launches a remote job calls ``on_job_started(job_name)`` as soon as the job exists;
        one that runs here has no job to name and never calls it.
        """
