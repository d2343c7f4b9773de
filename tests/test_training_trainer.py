"""DreamBoothTrainer without training: what it hands a backend (prepared photos, source dir, channels)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from lensa_for_all.config import TrainingConfig
from lensa_for_all.errors import PhotoSetError
from lensa_for_all.training.backend import Backend, TrainingResult
from lensa_for_all.training.progress import ProgressCallback
from lensa_for_all.training.trainer import DreamBoothTrainer


class RecordingBackend(Backend):
    name = "recording"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run(self, source_dir: Path, channels: Mapping[str, Path], output_dir: Path, *,
            hyperparameters: Mapping[str, Any] | None = None,
            progress: ProgressCallback | None = None) -> TrainingResult:
        self.calls.append(dict(source_dir=source_dir, channels=dict(channels), output_dir=output_dir,
                               hyperparameters=hyperparameters))
        return TrainingResult(output_dir=output_dir, backend=self.name)


def test_photoset_is_prepared_at_the_training_resolution(tmp_path: Path) -> None:
    from lensa_for_all import PhotoSet
    from lensa_for_all.testing import make_photos

    make_photos(tmp_path / "rex", 4, size=(320, 400), kind="pet", format="png")
    before = {p.name: p.read_bytes() for p in (tmp_path / "rex").iterdir()}
    photos = PhotoSet.from_folder(tmp_path / "rex", subject_class="dog")
    backend = RecordingBackend()
    config = TrainingConfig.for_subject("dog", resolution=128)
    result = DreamBoothTrainer(config, backend=backend).train(photos, output_dir=tmp_path / "model",
                                                               class_images=tmp_path / "dogs",
                                                               hyperparameters={"seed": "3"})
    assert result.backend == "recording" and result.output_dir == tmp_path / "model"
    call = backend.calls[0]
    instance = call["channels"]["instance"]
    assert instance == tmp_path / "model.work" / "instance"
    manifest = json.loads((instance / "manifest.json").read_text())
    assert len(manifest["photos"]) == 4 and manifest["settings"]["resolution"] == 128
    assert call["channels"]["class"] == tmp_path / "dogs"
    assert (call["source_dir"] / "lensa_train.py").is_file()
    assert TrainingConfig.from_json(call["source_dir"] / "training_config.json") == config
    assert call["hyperparameters"] == {"seed": "3"}
    assert {p.name: p.read_bytes() for p in (tmp_path / "rex").iterdir()} == before  # the user's photos untouched


def test_a_folder_is_passed_as_is_and_errors_are_clear(tmp_path: Path) -> None:
    backend = RecordingBackend()
    folder = tmp_path / "prepared"
    folder.mkdir()
    trainer = DreamBoothTrainer(TrainingConfig(), backend=backend)
    trainer.train(folder, output_dir=tmp_path / "m")
    assert backend.calls[0]["channels"] == {"instance": folder}
    with pytest.raises(PhotoSetError, match="not a folder"):
        trainer.train(tmp_path / "missing", output_dir=tmp_path / "m")
    with pytest.raises(PhotoSetError, match="output_dir"):
        trainer.train(folder)
    assert "lora" in repr(trainer)


class NamingBackend(RecordingBackend):
    """A backend that launches a (pretend) remote job and reports its name as the contract says."""

    def run(self, source_dir: Path, channels: Mapping[str, Path], output_dir: Path, *,  # type: ignore[override]
            hyperparameters: Mapping[str, Any] | None = None, progress: ProgressCallback | None = None,
            on_job_started: Any = None) -> TrainingResult:
        if on_job_started is not None:
            on_job_started("job-1")
        return super().run(source_dir, channels, output_dir, hyperparameters=hyperparameters, progress=progress)


def test_on_job_started_reaches_the_backend_and_older_backends_still_work(tmp_path: Path) -> None:
    folder = tmp_path / "prepared"
    folder.mkdir()
    names: list[str] = []
    DreamBoothTrainer(TrainingConfig(), backend=NamingBackend()).train(folder, output_dir=tmp_path / "m",
                                                                         on_job_started=names.append)
    assert names == ["job-1"]
    # RecordingBackend.run predates on_job_started: without a callback the trainer does not pass it
    backend = RecordingBackend()
    DreamBoothTrainer(TrainingConfig(), backend=backend).train(folder, output_dir=tmp_path / "m")
    assert backend.calls and backend.calls[0]["output_dir"] == tmp_path / "m"


def test_the_local_backend_is_the_default_and_keeps_its_work_folder(tmp_path: Path) -> None:
    from lensa_for_all.training.local import LocalBackend

    assert LocalBackend(work_dir=tmp_path / "w").work_dir_for(tmp_path / "m") == tmp_path / "w"
    assert RecordingBackend().work_dir_for(tmp_path / "m") == tmp_path / "m.work"
    assert DreamBoothTrainer(TrainingConfig()).backend is None  # resolved to LocalBackend() by train()
