"""Helpers for the pipeline tests: sample photos, a fast config, a trainer stand-in, a progress recorder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lensa_for_all.config import TrainingConfig
from lensa_for_all.pipeline.progress import RunProgress
from lensa_for_all.training.backend import Backend, TrainingResult
from lensa_for_all.training.progress import TrainingProgress
from lensa_for_all.training.trainer import DreamBoothTrainer


def copy_sample_photos(dest: Path, n: int = 5) -> Path:
    """The package's demo photos (5 shots of one person, faces detectable) copied into ``dest``."""
    from lensa_for_all.demo import sample_photos

    dest.mkdir(parents=True, exist_ok=True)
    for src in sample_photos()[:n]:
        shutil.copyfile(src, dest / src.name)
    return dest


def fast_config(base_model: Path, **overrides: Any) -> TrainingConfig:
    """The person preset scaled down to the 64 px tiny model: 2 steps, no class images."""
    settings: dict[str, Any] = dict(base_model=str(base_model), resolution=64, max_train_steps=2, lora_rank=4,
                                    mixed_precision="no", with_prior_preservation=False, train_text_encoder=False,
                                    learning_rate=1e-3)
    settings.update(overrides)
    return TrainingConfig.for_subject("person", "lora", **settings)


class CountingTrainer(DreamBoothTrainer):
    """The real trainer, counting its ``train`` calls (the spy that proves a stage was not re-run)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def train(self, *args: Any, **kwargs: Any) -> TrainingResult:
        self.calls += 1
        return super().train(*args, **kwargs)


class CopyTrainer(DreamBoothTrainer):
    """Stands in for training: reports two steps and copies a ready model folder (the tiny pipeline).

    Lets the state logic and the real generation be tested in seconds; the real loop is covered by the
    whole-run test and by tests/test_local_backend.py.
    """

    def __init__(self, model: Path, config: TrainingConfig) -> None:
        super().__init__(config)
        self.model = model
        self.calls: list[Path] = []

    def train(self, photos: Any, backend: Any = None, output_dir: Any = None, *, class_images: Any = None,
              hyperparameters: Any = None, progress: Any = None) -> TrainingResult:
        self.calls.append(Path(photos))
        for step in (1, 2):
            if progress:
                progress(TrainingProgress(step=step, total_steps=2, loss=0.5 / step))
        out = Path(output_dir)
        shutil.copytree(self.model, out, dirs_exist_ok=True)
        return TrainingResult(output_dir=out, metrics={"steps": 2}, backend="local")


class FakeRemoteBackend(Backend):
    """A remote backend double: ``run`` launches a "job" through ``start``, names it to ``on_job_started`` and,
    the first time, the local process dies right after the launch (``KeyboardInterrupt``); ``attach`` delivers
    the job's model."""

    name = "fake-remote"

    def __init__(self, model: Path) -> None:
        self.model = model
        self.started: list[str] = []
        self.attached: list[str] = []
        self.crash_after_start = True

    def start(self, spec: Any) -> str:
        name = f"job-{len(self.started) + 1}"
        self.started.append(name)
        return name

    def run(self, source_dir: Path, channels: Any, output_dir: Path, *, hyperparameters: Any = None,
            progress: Any = None, on_job_started: Any = None) -> TrainingResult:
        assert (source_dir / "lensa_train.py").is_file() and (Path(channels["instance"]) / "manifest.json").is_file()
        name = self.start({"source": str(source_dir)})
        if on_job_started is not None:
            on_job_started(name)
        if self.crash_after_start:
            raise KeyboardInterrupt
        return self._deliver(name, output_dir)

    def attach(self, job_name: str, output_dir: Path | None = None, *, progress: Any = None) -> TrainingResult:
        self.attached.append(job_name)
        assert output_dir is not None
        if progress:
            progress(TrainingProgress(step=2, total_steps=2, loss=0.1))
        return self._deliver(job_name, Path(output_dir))

    def _deliver(self, name: str, output_dir: Path) -> TrainingResult:
        shutil.copytree(self.model, output_dir, dirs_exist_ok=True)
        return TrainingResult(output_dir=output_dir, metrics={"steps": 2}, job_name=name, cost_usd=0.12,
                              artifact_uri=f"s3://bucket/{name}/model.tar.gz", backend="sagemaker")


class RecordingProgress(RunProgress):
    """Records every event; optionally raises ``KeyboardInterrupt`` when an event matches ``interrupt_at``."""

    def __init__(self, interrupt_at: tuple[str, int] | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.interrupt_at = interrupt_at

    def stage_started(self, stage: str, *, total: int | None = None, detail: str = "") -> None:
        self.events.append(("started", stage))

    def stage_progress(self, stage: str, completed: int, total: int | None, *, info: str = "") -> None:
        self.events.append(("progress", stage, completed, total))
        if self.interrupt_at == (stage, completed):
            raise KeyboardInterrupt

    def stage_finished(self, stage: str, *, seconds: float, reused: bool, detail: str = "") -> None:
        self.events.append(("finished", stage, reused))

    def message(self, text: str) -> None:
        self.events.append(("message", text))

    def finished(self) -> list[tuple[str, bool]]:
        return [(e[1], e[2]) for e in self.events if e[0] == "finished"]


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under ``folder``: equal before and after means nothing was rewritten."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()}
