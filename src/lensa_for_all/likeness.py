"""Face likeness: does an image show the subject? Measured offline with real pretrained weights.

Faces are found by dlib's HOG frontal-face detector, aligned with dlib's 5-point landmark model and
embedded as 128-d vectors by dlib's ResNet face-recognition model; the two model files ship in the
``face-recognition-models`` package. Two photos of one person are usually closer than
:data:`SAME_PERSON_DISTANCE` (0.6, dlib's threshold). The score in [0, 1] maps that distance linearly::

    likeness = clip(1 - distance / (2 * 0.6), 0, 1)

so 1.0 is the same face, 0.5 is exactly the threshold (above 0.5: the same person), 0.0 is a distance of
1.2 or more. It needs the optional extra: ``pip install "lensa-for-all[likeness]"``; without it
:class:`FaceIdentity` raises :class:`~lensa_for_all.errors.LikenessUnavailable` saying so.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .errors import LikenessUnavailable, PhotoSetError
from .photos.faces import Box

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["SAME_PERSON_DISTANCE", "INSTALL_HINT", "Face", "FaceIdentity", "Likeness", "ReferenceSet",
           "is_available", "likeness_from_distance"]

SAME_PERSON_DISTANCE = 0.6
"""dlib's threshold: two faces closer than this are taken to be the same person (99.38% on LFW)."""

INSTALL_HINT = 'pip install "lensa-for-all[likeness]"'
"""What to run to get face likeness (dlib-bin and face-recognition-models)."""

DETECT_MIN_SIDE = 256
"""Images whose short side is smaller are upscaled first: the detector misses faces under about 80 px."""

DETECT_MAX_SIDE = 1024
"""Images whose long side is larger are downscaled first: detection time grows with pixels."""

DETECTION_SCORE = 0.3
"""Detector confidence a face needs; weaker hits are mostly badges, patterns and shadows, not faces."""

LANDMARKS_MODEL = "shape_predictor_5_face_landmarks.dat"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"

ImageLike = Any  # a PIL image, an (H, W, 3) uint8 array, or a path to an image file


def is_available() -> bool:
    """True when the ``[likeness]`` extra (dlib and face-recognition-models) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("dlib", "face_recognition_models"))


def likeness_from_distance(distance: float) -> float:
    """The documented mapping: 1 at distance 0, 0.5 at dlib's 0.6 threshold, 0 at 1.2 and beyond."""
    return float(min(1.0, max(0.0, 1.0 - distance / (2 * SAME_PERSON_DISTANCE))))


def _model_dir() -> Path:
    # Found without importing the package: its __init__ needs pkg_resources, gone from new setuptools.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LikenessUnavailable(f"Face likeness needs the face models: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.cache
def _models() -> tuple[Any, Any, Any]:
    """dlib's detector, 5-point landmark model and ResNet, loaded once per process."""
    try:
        import dlib
    except ImportError as exc:
        raise LikenessUnavailable(f"Face likeness needs dlib: {INSTALL_HINT}") from exc
    folder = _model_dir()
    paths = [folder / LANDMARKS_MODEL, folder / RECOGNITION_MODEL]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise LikenessUnavailable(f"The face model files {missing} are missing from {folder}; reinstall them: "
                                  f"pip install --force-reinstall face-recognition-models")
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(paths[0])),
            dlib.face_recognition_model_v1(str(paths[1])))


def _rgb(image: ImageLike) -> Image.Image:
    from PIL import Image, ImageOps

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            return ImageOps.exif_transpose(opened).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    import numpy as np

    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"Expected a uint8 image array, got {array.dtype}.")
    return Image.fromarray(array).convert("RGB")


@attrs.frozen
class Face:
    """One face in an image: its box (in that image's pixels) and its 128-d dlib embedding."""

    box: Box
    embedding: tuple[float, ...] = attrs.field(repr=False)

    def distance(self, other: Face | Sequence[float]) -> float:
        """Euclidean distance between the embeddings (under 0.6: the same person)."""
        import numpy as np

        theirs = other.embedding if isinstance(other, Face) else other
        return float(np.linalg.norm(np.asarray(self.embedding) - np.asarray(theirs)))


@attrs.frozen
class Likeness:
    """How much an image looks like the reference set.

    ``score`` in [0, 1] (0 when no face is found), ``distance`` the median distance to the reference
    faces, ``nearest``/``nearest_distance`` the closest reference (for overfitting checks), ``faces``
    how many faces the image shows and ``box`` the one that was scored (the surest).
    """

    score: float
    faces: int
    distance: float | None = None
    box: Box | None = None
    nearest: int | None = None
    nearest_distance: float | None = None

    @property
    def same_person(self) -> bool:
        return self.distance is not None and self.distance < SAME_PERSON_DISTANCE

    def to_dict(self) -> dict[str, Any]:
        return {"likeness": round(self.score, 4), "faces": self.faces,
                "distance": None if self.distance is None else round(self.distance, 4),
                "face_box": list(self.box.as_tuple()) if self.box else None,
                "nearest_reference": self.nearest,
                "nearest_distance": None if self.nearest_distance is None else round(self.nearest_distance, 4)}


@attrs.frozen
class ReferenceSet:
    """The subject's faces: one embedding per reference image that shows a face.

    ``sources[i]`` is the index of the input image ``embeddings[i]`` came from; ``missing`` lists the
    inputs where no face was found.
    """

    embeddings: tuple[tuple[float, ...], ...] = attrs.field(repr=False)
    sources: tuple[int, ...]
    missing: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.embeddings)


class FaceIdentity:
    """Embeds faces with dlib and scores images against a subject's photos.

    ``upsample`` is how many times the detector doubles the image to find small faces (0 is fastest;
    small images are upscaled to :data:`DETECT_MIN_SIDE` anyway). Models load once per process.
    Raises :class:`~lensa_for_all.errors.LikenessUnavailable` when the ``[likeness]`` extra is missing.
    """

    def __init__(self, *, upsample: int = 0) -> None:
        if upsample < 0:
            raise ValueError(f"upsample must be 0 or more, got {upsample}.")
        self.upsample = upsample
        self._detector, self._landmarks, self._resnet = _models()

    def faces(self, image: ImageLike) -> list[Face]:
        """Every face dlib finds, surest first, with boxes in the input image's pixels."""
        import numpy as np
        from PIL import Image

        rgb = _rgb(image)
        w, h = rgb.size
        scale = 1.0
        if min(w, h) < DETECT_MIN_SIDE:
            scale = DETECT_MIN_SIDE / min(w, h)
        elif max(w, h) > DETECT_MAX_SIDE:
            scale = DETECT_MAX_SIDE / max(w, h)
        if scale != 1.0:
            rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
        pixels = np.asarray(rgb)
        rects, scores, _ = self._detector.run(pixels, self.upsample, 0.0)
        found = [r for _, r in sorted(((-float(sc), i), r) for i, (r, sc) in enumerate(zip(rects, scores, strict=True))
                                      if sc >= DETECTION_SCORE)]
        out = []
        for rect in found:
            shape = self._landmarks(pixels, rect)
            embedding = tuple(float(x) for x in self._resnet.compute_face_descriptor(pixels, shape))
            box = Box(max(0, round(rect.left() / scale)), max(0, round(rect.top() / scale)),
                      min(w, round(rect.right() / scale)), min(h, round(rect.bottom() / scale)))
            out.append(Face(box, embedding))
        return out

    def embed(self, image: ImageLike) -> Face | None:
        """The surest face in the image, or None when there is none."""
        faces = self.faces(image)
        return faces[0] if faces else None

    def references(self, images: Sequence[ImageLike]) -> ReferenceSet:
        """Embed the subject's photos (the surest face of each); photos without a face are listed."""
        embeddings, sources, missing = [], [], []
        for i, image in enumerate(images):
            face = self.embed(image)
            if face is None:
                missing.append(i)
            else:
                embeddings.append(face.embedding)
                sources.append(i)
        return ReferenceSet(tuple(embeddings), tuple(sources), tuple(missing))

    def score(self, image: ImageLike, references: ReferenceSet | Sequence[ImageLike]) -> Likeness:
        """How much ``image`` (its surest face) looks like the reference faces; 0 when it shows no face."""
        refs = references if isinstance(references, ReferenceSet) else self.references(references)
        if not len(refs):
            raise PhotoSetError("None of the reference photos shows a face that dlib can find; use photos where "
                                "the subject's face is visible and frontal.")
        faces = self.faces(image)
        if not faces:
            return Likeness(score=0.0, faces=0)
        return score_face(faces[0], refs, faces=len(faces))


def score_face(face: Face, references: ReferenceSet, *, faces: int = 1) -> Likeness:
    """Score an embedded face against a reference set (median distance, and the nearest reference)."""
    distances = [face.distance(e) for e in references.embeddings]
    nearest = min(range(len(distances)), key=distances.__getitem__)
    median = statistics.median(distances)
    return Likeness(score=likeness_from_distance(median), faces=faces, distance=median, box=face.box,
                    nearest=references.sources[nearest], nearest_distance=distances[nearest])
