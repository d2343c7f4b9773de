"""Early-stopping evaluators: score validation images against the subject's photos.

An evaluator has a ``name``, ``higher_is_better`` and ``score(generated, references) -> float``. Two
ship here: :class:`FIDEvaluator` (Frechet distance of Inception features; lower is better) and
:class:`SubjectSimilarityEvaluator` (mean cosine similarity of image embeddings to the photos' mean
embedding; higher is better). Their feature extractors are injectable, so tests and apps can use a
small or domain-specific network; the defaults download weights on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

from ..errors import ConfigError

__all__ = ["Evaluator", "FIDEvaluator", "SubjectSimilarityEvaluator", "EarlyStopping", "make_evaluator",
           "frechet_distance", "FeatureExtractor"]

# images -> array-like of shape (N, D)
FeatureExtractor = Callable[[Sequence[Any]], Any]


class Evaluator(Protocol):
    name: str
    higher_is_better: bool

    def score(self, generated: Sequence[Any], references: Sequence[Any]) -> float: ...


def frechet_distance(a: Any, b: Any) -> float:
    """Frechet distance between Gaussians fitted to feature rows ``a`` (N, D) and ``b`` (M, D)."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False)) if len(a) > 1 else np.zeros((a.shape[1], a.shape[1]))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False)) if len(b) > 1 else np.zeros((b.shape[1], b.shape[1]))
    # tr(sqrt(cov_a cov_b)) = sum of square roots of the (real, non-negative) eigenvalues of cov_a cov_b
    eig = np.linalg.eigvals(cov_a @ cov_b)
    tr_sqrt = float(np.sqrt(np.clip(eig.real, 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def _inception_features(images: Sequence[Any]) -> Any:
    """InceptionV3 pool features via torchmetrics (weights download on first use)."""
    try:
        import numpy as np
        import torch
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as exc:
        raise ConfigError(
            "The FID evaluator needs torchmetrics: `pip install torchmetrics[image]`, or pass a "
            "feature_extractor to FIDEvaluator."
        ) from exc
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    batch = torch.from_numpy(np.stack([np.asarray(im.convert("RGB").resize((299, 299))) for im in images]))
    with torch.inference_mode():
        return net(batch.permute(0, 3, 1, 2).contiguous()).numpy()


def _clip_features(images: Sequence[Any]) -> Any:
    """CLIP image embeddings (``openai/clip-vit-base-patch32``, downloaded on first use)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model_id = "openai/clip-vit-base-patch32"
    model = CLIPModel.from_pretrained(model_id)
    processor = CLIPProcessor.from_pretrained(model_id)
    with torch.inference_mode():
        inputs = processor(images=list(images), return_tensors="pt")
        return model.get_image_features(**inputs).numpy()


@attrs.define
class FIDEvaluator:
    """Frechet Inception Distance between validation images and the instance photos (lower is better)."""

    feature_extractor: FeatureExtractor = _inception_features
    name: str = "fid"
    higher_is_better: bool = False

    def score(self, generated: Sequence[Any], references: Sequence[Any]) -> float:
        return frechet_distance(self.feature_extractor(generated), self.feature_extractor(references))


@attrs.define
class SubjectSimilarityEvaluator:
    """Mean cosine similarity of each validation image to the photos' mean embedding (higher is better)."""

    feature_extractor: FeatureExtractor = _clip_features
    name: str = "subject_similarity"
    higher_is_better: bool = True

    def score(self, generated: Sequence[Any], references: Sequence[Any]) -> float:
        import numpy as np

        g = np.asarray(self.feature_extractor(generated), dtype=np.float64)
        r = np.asarray(self.feature_extractor(references), dtype=np.float64)
        g /= np.linalg.norm(g, axis=1, keepdims=True) + 1e-12
        centre = r.mean(0)
        centre /= np.linalg.norm(centre) + 1e-12
        return float((g @ centre).mean())


def make_evaluator(name: str) -> Evaluator:
    if name == "fid":
        return FIDEvaluator()
    if name == "subject_similarity":
        return SubjectSimilarityEvaluator()
    raise ConfigError(f"Unknown early-stopping metric {name!r}; use 'fid' or 'subject_similarity'.")


@attrs.define
class EarlyStopping:
    """Tracks the best score; ``should_stop`` after ``patience`` evaluations without improvement."""

    patience: int
    best_score: float | None = None
    best_step: int | None = None
    bad_evaluations: int = 0

    def update(self, score: float, step: int, *, higher_is_better: bool) -> bool:
        """Record ``score``; return True when it is the best so far."""
        if not math.isfinite(score):
            self.bad_evaluations += 1
            return False
        better = self.best_score is None or (score > self.best_score if higher_is_better else score < self.best_score)
        if better:
            self.best_score, self.best_step, self.bad_evaluations = score, step, 0
        else:
            self.bad_evaluations += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience

    def state(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def load(self, state: dict[str, Any]) -> None:
        for key in ("best_score", "best_step", "bad_evaluations"):
            if key in state:
                setattr(self, key, state[key])
