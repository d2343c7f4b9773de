"""Likeness early stopping with real face weights: the evaluator, its overfitting flag, and the training loop
with a scripted model whose validation images drift from the subject to other people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from likeness_helpers import face_square, needs_likeness
from training_helpers import tiny_config


@pytest.fixture(scope="module")
def instance_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four face-centred training photos of the astronaut (what the prepared set holds), 96 px."""
    needs_likeness()
    folder = tmp_path_factory.mktemp("instance") / "astronaut"
    folder.mkdir()
    for seed in range(4):
        face_square("astronaut", seed, 96).save(folder / f"photo-{seed}.png")
    return folder


def _references(folder: Path, side: int = 64) -> list[Any]:
    from lensa_for_all.training.data import load_training_image

    return [load_training_image(p, side) for p in sorted(folder.iterdir())]


def test_evaluator_scores_the_subject_above_others_and_flags_a_copied_photo(instance_photos: Path) -> None:
    from lensa_for_all.training.evaluators import LikenessEvaluator, make_evaluator

    refs = _references(instance_photos)
    ev = make_evaluator("likeness")
    assert isinstance(ev, LikenessEvaluator) and ev.higher_is_better and ev.name == "likeness"
    subject = ev.score([face_square("astronaut", 20, 64)], refs)
    other = ev.score([face_square("hopper", 21, 64), face_square("coelho", 22, 64)], refs)
    assert subject > 0.5 > other
    assert ev.history[0]["overfit"] == [] and len(ev.last["scores"]) == 2

    copied = ev.score([refs[2], face_square("astronaut", 23, 64)], refs)  # a training photo comes back as is
    assert ev.last["overfit"] == [{"image": 0, "training_photo": 2}]
    assert copied > 0.5 and len(ev.history) == 3


@pytest.mark.slow
def test_early_stopping_on_likeness_fires_and_keeps_the_best_step(instance_photos: Path, tiny_sd: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripted 'model' draws the subject at the first validation, then other people: likeness falls,
    early stopping fires after ``patience`` worse validations and the first step's weights are kept."""
    import lensa_for_all.training.validation as validation
    from lensa_for_all.training.loop import train

    script = iter([("astronaut", 30), ("hopper", 31), ("coelho", 32), ("hopper", 33)])

    def scripted_validation(config: Any, *args: Any) -> list[Any]:
        person, seed = next(script)
        return [face_square(person, seed, config.resolution)]

    monkeypatch.setattr(validation, "generate_validation_images", scripted_validation)
    cfg = tiny_config(tiny_sd, "lora", max_train_steps=8, validation_steps=1, early_stopping=True,
                      early_stopping_metric="likeness", early_stopping_patience=2, with_prior_preservation=False,
                      train_text_encoder=False, validation_prompts=("a photo of {token} {subject_class}",),
                      validation_inference_steps=1)
    out = tmp_path / "out"
    metrics = train(cfg, instance_photos, out, checkpoint_dir=tmp_path / "ck")
    assert metrics["stopped_early"] and metrics["steps"] == 3
    assert metrics["early_stopping_metric"] == "likeness" and metrics["best_step"] == 1
    assert metrics["best_score"] > 0.5
    evaluations = metrics["evaluations"]
    assert [e["step"] for e in evaluations] == [1, 2, 3]
    assert evaluations[0]["score"] > 0.5 > max(e["score"] for e in evaluations[1:])
    assert all(e["metric"] == "likeness" and len(e["scores"]) == 1 for e in evaluations)
    assert json.loads((tmp_path / "ck" / "best" / "best.json").read_text())["step"] == 1
    written = json.loads((out / "metrics.json").read_text())
    assert [e["step"] for e in written["evaluations"]] == [1, 2, 3]
