"""DreamBoothTrainer: a TrainingConfig plus where to run it.

It owns the loop (``lensa_for_all.training``) and packages it as a SageMaker source dir; the backend
decides where that source dir runs (this machine by default, ``LocalBackend``; ``SageMakerBackend``
from ``lensa_for_all.backends``). ``train`` is the one call an app needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import TrainingConfig
from ..errors import PhotoSetError

if TYPE_CHECKING:
    from .backend import Backend, JobStartedCallback, TrainingResult
    from .progress import ProgressCallback

__all__ = ["DreamBoothTrainer"]


class DreamBoothTrainer:
    """Fine-tunes Stable Diffusion on a subject's photos with DreamBooth (LoRA or full).

    ``backend`` defaults to :class:`~lensa_for_all.training.local.LocalBackend`; pass a
    ``SageMakerBackend`` to train in the cloud with the very same entry point.
    """

    def __init__(self, config: TrainingConfig | None = None, *, backend: Backend | None = None) -> None:
        self.config = config if config is not None else TrainingConfig()
        self.backend = backend

    def __repr__(self) -> str:
        return f"DreamBoothTrainer(method={self.config.method!r}, base_model={self.config.base_model!r})"

    def package_source_dir(self, dest: str | os.PathLike[str]) -> Path:
        """Write the self-contained SageMaker source dir (entry script, code, requirements, config) to ``dest``."""
        from .source_dir import package_source_dir

        return package_source_dir(self.config, dest)

    def train(
        self,
        photos: Any,
        backend: Backend | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        class_images: str | os.PathLike[str] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        on_job_started: JobStartedCallback | None = None,
    ) -> TrainingResult:
        """Train on ``photos`` (a ``PhotoSet`` or a folder of prepared photos); return the result.

        The artifacts land in ``output_dir``; the packaged source dir and, for a ``PhotoSet``, the
        prepared photos go in ``<output_dir>.work``. ``class_images`` is an optional folder of
        user-supplied class images for prior preservation. ``on_job_started`` is called with the job's name
        when the backend launches a remote job (SageMaker), so that a caller can re-attach to it later.
        """
        from .backend import Backend
        from .local import LocalBackend

        if output_dir is None:
            raise PhotoSetError("DreamBoothTrainer.train needs output_dir: the folder that will hold the model.")
        output_dir = Path(output_dir)
        chosen = backend or self.backend or LocalBackend()
        work = (chosen.work_dir_for(output_dir) if isinstance(chosen, Backend)
                else Backend.work_dir_for(chosen, output_dir))  # a duck-typed backend
        work.mkdir(parents=True, exist_ok=True)
        if hasattr(photos, "prepare"):
            instance = Path(photos.prepare(work / "instance", resolution=self.config.resolution))
        else:
            instance = Path(photos)
            if not instance.is_dir():
                raise PhotoSetError(f"{instance} is not a folder of photos; pass a PhotoSet or a prepared folder.")
        channels: dict[str, Path] = {"instance": instance}
        if class_images is not None:
            channels["class"] = Path(class_images)
        source = self.package_source_dir(work / "source")
        # passed only when asked for, so a Backend written before on_job_started existed keeps working
        extra = {"on_job_started": on_job_started} if on_job_started is not None else {}
        return chosen.run(source, channels, output_dir, hyperparameters=hyperparameters, progress=progress, **extra)
