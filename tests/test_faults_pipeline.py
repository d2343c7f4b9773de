"""A rerun verifies each stage's outputs (sizes and sha256) and redoes only what is missing or damaged;
Ctrl-C between an avatar's PNG and its record leaves no duplicate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensa_for_all import Pipeline
from lensa_for_all.generation.pack import PackWriter
from lensa_for_all.pipeline.state import RunState
from pipeline_helpers import CopyTrainer, RecordingProgress, copy_sample_photos, fast_config

GEN = {"num_inference_steps": 2}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return copy_sample_photos(tmp_path / "me", n=4)


def _run(photos: Path, tmp_path: Path, tiny_sd: Path, trainer: CopyTrainer | None = None,
         progress: RecordingProgress | None = None) -> tuple[object, CopyTrainer, RecordingProgress]:
    trainer = trainer or CopyTrainer(tiny_sd, fast_config(tiny_sd))
    progress = progress or RecordingProgress()
    result = Pipeline(photos, trainer=trainer, run_dir=tmp_path / "run", progress=progress).run(
        num_images=3, out_dir=tmp_path / "out", batch_size=1, seed=11, **GEN)
    return result, trainer, progress


def _messages(progress: RecordingProgress) -> list[str]:
    return [e[1] for e in progress.events if e[0] == "message"]


def test_outputs_are_recorded_with_size_and_sha256(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    _run(photos, tmp_path, tiny_sd)
    state = RunState.load(tmp_path / "run")
    model_checks = state.stage("train")["outputs"]["checks"]
    assert "unet/diffusion_pytorch_model.safetensors" in model_checks
    size, digest = model_checks["unet/diffusion_pytorch_model.safetensors"]
    assert size == (tmp_path / "run" / "model" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert len(digest) == 64
    generate = state.stage("generate")["outputs"]
    assert sorted(generate["checks"]) == sorted(generate["files"]) and len(generate["files"]) == 3


def test_a_deleted_model_file_retrains(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    _, trainer, _ = _run(photos, tmp_path, tiny_sd)
    (tmp_path / "run" / "model" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    result, _, progress = _run(photos, tmp_path, tiny_sd, trainer)
    assert len(trainer.calls) == 2
    assert any("The trained model is damaged (unet/diffusion_pytorch_model.safetensors (missing))" in m
               for m in _messages(progress))
    assert (tmp_path / "run" / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert "train" not in result.reused  # type: ignore[attr-defined]


def test_a_truncated_avatar_is_rendered_again_alone(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    first, trainer, _ = _run(photos, tmp_path, tiny_sd)
    avatars = list(first.avatars)  # type: ignore[attr-defined]
    victim = avatars[1]
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 2])
    untouched = {p: p.stat().st_mtime_ns for p in (avatars[0], avatars[2])}
    again, _, progress = _run(photos, tmp_path, tiny_sd, trainer)
    assert len(trainer.calls) == 1 and again.reused == ("photos", "train")  # type: ignore[attr-defined]
    assert any("Avatars missing or damaged" in m and victim.name in m for m in _messages(progress))
    assert [e[2] for e in progress.events if e[:2] == ("progress", "generate")] == [2, 3]
    assert victim.read_bytes() == original  # the same seed renders the same image, under its own name
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(p.name for p in avatars)
    third, _, _ = _run(photos, tmp_path, tiny_sd, trainer)
    assert third.reused == ("photos", "train", "generate")  # type: ignore[attr-defined]


def test_a_damaged_prepared_photo_prepares_again(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    _, trainer, _ = _run(photos, tmp_path, tiny_sd)
    prepared = sorted((tmp_path / "run" / "photos").glob("*.png"))[0]
    prepared.write_bytes(b"\x89PNG broken")
    again, _, progress = _run(photos, tmp_path, tiny_sd, trainer)
    assert any("Prepared photos are missing or damaged" in m for m in _messages(progress))
    from PIL import Image

    with Image.open(prepared) as im:
        im.load()
    # the prepared bytes are the same as before, so training and the avatars are still valid
    assert again.reused == ("train", "generate")  # type: ignore[attr-defined]


def test_ctrl_c_between_an_avatar_and_its_record_renders_no_duplicate(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = PackWriter.add
    calls = {"n": 0}

    def add(self: PackWriter, avatar: object, position: int | None = None) -> Path:
        path = real(self, avatar, position)  # type: ignore[arg-type]
        calls["n"] += 1
        if calls["n"] == 2:  # the PNG is on disk, the run state does not know it yet
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(PackWriter, "add", add)
    with pytest.raises(KeyboardInterrupt):
        _run(photos, tmp_path, tiny_sd)
    monkeypatch.setattr(PackWriter, "add", real)
    state = RunState.load(tmp_path / "run")
    assert len(state.stage("generate")["progress"]["files"]) == 1
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    result, _, progress = _run(photos, tmp_path, tiny_sd)
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert len(names) == 3 and not [n for n in names if n.endswith("-2.png")]
    assert sorted(p.name for p in result.avatars) == names  # type: ignore[attr-defined]
    assert any("Keeping the 2 avatars" in m for m in _messages(progress))
    index = json.loads((tmp_path / "out" / "avatars.json").read_text())
    assert sorted(e["file"] for e in index["avatars"]) == names
