"""Pipeline.run(keep_best=N): candidates rendered in the run folder, the N most like the subject kept, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lensa_for_all import Pipeline
from lensa_for_all.errors import ConfigError, LikenessUnavailable
from lensa_for_all.generation import AvatarModel
from lensa_for_all.training.trainer import DreamBoothTrainer
from likeness_helpers import ScriptedRunner, needs_likeness, write_set
from pipeline_helpers import fast_config


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedRunner:
    needs_likeness()
    runner = ScriptedRunner(batch_size=1)

    def load(cls: Any, source: Any, **_: Any) -> AvatarModel:  # the pipeline's generate stage loads this
        return AvatarModel(runner, name="scripted", manifest={"token": "ohwx", "subject_class": "woman"})

    monkeypatch.setattr(AvatarModel, "load", classmethod(load))
    return runner


@pytest.mark.slow
def test_run_keeps_the_candidates_most_like_the_subject_and_picks_again_without_rendering(
        tiny_sd: Path, tmp_path: Path, scripted: ScriptedRunner) -> None:
    photos = tmp_path / "astronaut"
    write_set(photos, ["astronaut"] * 4, seed=40)
    out = tmp_path / "avatars"
    pipe = Pipeline(photos, trainer=DreamBoothTrainer(fast_config(tiny_sd)), progress=False)
    result = pipe.run(num_images=6, out_dir=out, seed=0, keep_best=2, num_inference_steps=2)

    assert sorted(scripted.rendered) == [0, 1, 2, 3, 4, 5]  # six candidates
    candidates = result.run_dir / "candidates"
    assert len(list(candidates.glob("*.png"))) == 6
    index = json.loads((out / "avatars.json").read_text())
    assert [e["seed"] for e in index["avatars"]] == [0, 3]  # the two shots of the subject
    assert all(e["likeness"] > 0.5 for e in index["avatars"])
    assert [p.name for p in result.avatars] == [e["file"] for e in index["avatars"]]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in result.avatars)
    assert (out / "contact_sheet.jpg").is_file()

    # the same run again: every stage reused
    assert pipe.run(num_images=6, out_dir=out, seed=0, keep_best=2, num_inference_steps=2).reused == (
        "photos", "train", "generate")
    # a kept avatar deleted: picked again from the candidates, nothing rendered, the same names
    result.avatars[1].unlink()
    again = pipe.run(num_images=6, out_dir=out, seed=0, keep_best=2, num_inference_steps=2)
    assert len(scripted.rendered) == 6 and "generate" not in again.reused
    assert [p.name for p in again.avatars] == [p.name for p in result.avatars]
    assert len(list(out.glob("*.png"))) == 2

    # another keep_best is another generation: the old picks and candidates are replaced
    third = pipe.run(num_images=6, out_dir=out, seed=0, keep_best=1, num_inference_steps=2)
    assert [json.loads((out / "avatars.json").read_text())["avatars"][0]["seed"]] == [0]
    assert len(third.avatars) == 1 and len(list(out.glob("*.png"))) == 1


def test_keep_best_is_checked_before_anything_runs(tiny_sd: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from lensa_for_all import likeness
    from pipeline_helpers import copy_sample_photos

    photos = copy_sample_photos(tmp_path / "me", n=4)
    pipe = Pipeline.from_folder(photos, base_model=str(tiny_sd), run_dir=tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"keep_best=5 keeps the best of num_images=4"):
        pipe.plan(num_images=4, keep_best=5)
    monkeypatch.setattr(likeness, "is_available", lambda: False)
    with pytest.raises(LikenessUnavailable, match=r"lensa-for-all\[likeness\]"):
        pipe.run(num_images=4, keep_best=2)
    assert not (tmp_path / "run").exists()
