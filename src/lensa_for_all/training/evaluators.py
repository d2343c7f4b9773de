"""Early-stopping evaluators: score validation images against the subject's photos.

An evaluator has a ``name``, ``higher_is_better`` and ``score(generated, references) -> float``. Three
ship here: :class:`FIDEvaluator` (Frechet distance of Inception features; lower is better) and
:class:`SubjectSimilarityEvaluator` (mean cosine similarity of image embeddings to the photos' mean
embedding; higher is better). :class:`LikenessEvaluator` scores faces with dlib (``[likeness]`` extra). The
first two's feature extractors are injectable, so tests and apps can use a
small or domain-specific network; the defaults download weights on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

from ..errors import ConfigError, TrainingError

__all__ = ["Evaluator", "FIDEvaluator", "SubjectSimilarityEvaluator", "LikenessEvaluator", "EarlyStopping",
           "make_evaluator", "frechet_distance", "FeatureExtractor"]

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


@attrs.define
class LikenessEvaluator:
    """Face likeness of the validation images to the subject's photos (higher is better; ``[likeness]`` extra).

    The score is the mean :func:`~lensa_for_all.likeness.likeness_from_distance` over the images (0 for one
    with no face). An image is flagged as overfitting when its face is nearly one training photo's
    (embedding distance under ``overfit_distance``) *and* so is the whole picture (perceptual hashes within
    ``overfit_hash_distance`` bits): that photo's pose and background pasted in, not the subject in a new
    scene. Each call appends ``{"likeness", "scores", "overfit"}`` to :attr:`history` (``last`` is the newest).
    """

    identity: Any = None
    overfit_distance: float = 0.3
    overfit_hash_distance: int = 12
    name: str = "likeness"
    higher_is_better: bool = True
    history: list[dict[str, Any]] = attrs.field(factory=list)
    _references: tuple[tuple[str, ...], Any, list[int]] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def last(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    def _reference_set(self, references: Sequence[Any]) -> tuple[Any, list[int]]:
        """Embeddings and perceptual hashes of the reference photos, computed once per distinct set."""
        import hashlib

        key = tuple(hashlib.sha1(im.convert("RGB").tobytes()).hexdigest() for im in references)
        if self._references is None or self._references[0] != key:
            refs = self.identity.references(references)
            self._references = (key, refs, [_phash(im) for im in references])
        return self._references[1], self._references[2]

    def score(self, generated: Sequence[Any], references: Sequence[Any]) -> float:
        from ..likeness import FaceIdentity, score_face

        if self.identity is None:
            self.identity = FaceIdentity()
        refs, hashes = self._reference_set(references)
        if not len(refs):
            raise TrainingError("Likeness early stopping found no face in the training photos; use photos where the "
                                "face is visible, or early_stopping_metric='fid'.")
        from ..photos.quality import hamming

        scores, overfit = [], []
        for i, image in enumerate(generated):
            faces = self.identity.faces(image)
            if not faces:
                scores.append(0.0)
                continue
            result = score_face(faces[0], refs, faces=len(faces))
            scores.append(result.score)
            near = result.nearest
            if (result.nearest_distance is not None and near is not None
                    and result.nearest_distance < self.overfit_distance
                    and hamming(_phash(image), hashes[near]) <= self.overfit_hash_distance):
                overfit.append({"image": i, "training_photo": near})
        value = sum(scores) / len(scores) if scores else 0.0
        self.history.append({"likeness": value, "scores": scores, "overfit": overfit})
        return value


def _phash(image: Any) -> int:
    import numpy as np

    from ..photos.quality import perceptual_hash

    return perceptual_hash(np.asarray(image.convert("L"), dtype=np.uint8))


def make_evaluator(name: str) -> Evaluator:
    if name == "fid":
        return FIDEvaluator()
    if name == "subject_similarity":
        return SubjectSimilarityEvaluator()
    if name == "likeness":
        from ..likeness import INSTALL_HINT, is_available

        if not is_available():
            from ..errors import LikenessUnavailable

            raise LikenessUnavailable(f"early_stopping_metric='likeness' needs face likeness: {INSTALL_HINT} "
                                      "(or use 'fid').")
        return LikenessEvaluator()
    raise ConfigError(f"Unknown early-stopping metric {name!r}; use 'fid', 'subject_similarity' or 'likeness'.")


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
