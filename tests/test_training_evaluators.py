"""Early-stopping evaluators and the tracker, with injected feature extractors (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest

from lensa_for_all.errors import ConfigError
from lensa_for_all.training.evaluators import (
    EarlyStopping,
    FIDEvaluator,
    SubjectSimilarityEvaluator,
    frechet_distance,
    make_evaluator,
)


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=1e-6)  # |mean shift|^2
    assert frechet_distance(a, a * 3) > frechet_distance(a, a * 1.5) > 0


def test_fid_evaluator_uses_the_injected_extractor() -> None:
    from PIL import Image

    def colour_features(images: list) -> np.ndarray:
        return np.stack([np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(0) for im in images])

    red = [Image.new("RGB", (8, 8), (200 + i, 10, 10)) for i in range(4)]
    blue = [Image.new("RGB", (8, 8), (10, 10, 200 + i)) for i in range(4)]
    fid = FIDEvaluator(feature_extractor=colour_features)
    assert not fid.higher_is_better
    assert fid.score(red, red) < 1e-6 < fid.score(blue, red)


def test_subject_similarity() -> None:
    feats = {"a": [1.0, 0.0], "b": [0.9, 0.1], "c": [0.0, 1.0]}
    ev = SubjectSimilarityEvaluator(feature_extractor=lambda names: np.array([feats[n] for n in names]))
    assert ev.higher_is_better
    assert ev.score(["a"], ["a", "b"]) > ev.score(["c"], ["a", "b"])
    assert ev.score(["a"], ["a"]) == pytest.approx(1.0)


def test_make_evaluator() -> None:
    assert make_evaluator("fid").name == "fid"
    assert make_evaluator("subject_similarity").higher_is_better
    with pytest.raises(ConfigError, match="Unknown early-stopping metric"):
        make_evaluator("lpips")


def test_early_stopping_tracker_and_state_round_trip() -> None:
    es = EarlyStopping(patience=2)
    assert es.update(5.0, 10, higher_is_better=False)
    assert es.update(4.0, 20, higher_is_better=False)
    assert not es.update(4.5, 30, higher_is_better=False) and not es.should_stop
    assert not es.update(float("nan"), 40, higher_is_better=False) and es.should_stop
    again = EarlyStopping(patience=2)
    again.load(es.state())
    assert (again.best_step, again.best_score, again.should_stop) == (20, 4.0, True)
    up = EarlyStopping(patience=1)
    assert up.update(0.1, 1, higher_is_better=True) and up.update(0.2, 2, higher_is_better=True)
