"""Finding faces and choosing the square crop: face-centred for people, saliency for pets and objects.

The detector is OpenCV's Haar cascade for frontal faces, whose model files ship inside the
``opencv-python-headless`` 4.x wheel (``cv2.data``), so it works offline with no download.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["Box", "FACE_MARGIN", "detect_faces", "face_crop", "saliency_crop"]

FACE_MARGIN = 3.2
"""Crop side as a multiple of the face's size: room for hair above and shoulders below."""

DETECT_SIDE = 256
"""Short side, in pixels, of the copy faces are searched in."""

FACE_CENTRE_Y = 0.42
"""Where the face centre sits in a face crop, from the top: a little above the middle, like a portrait."""


@attrs.frozen
class Box:
    """An axis-aligned box in pixels of the upright photo: left, top, right, bottom (right/bottom exclusive)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)

    def scaled(self, factor: float) -> Box:
        return Box(round(self.left * factor), round(self.top * factor),
                   round(self.right * factor), round(self.bottom * factor))

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


@functools.cache
def _cascade(name: str) -> Any:
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)  # type: ignore[attr-defined]
    if cascade.empty():  # pragma: no cover - only with an OpenCV wheel that dropped the cascades
        from ..errors import PhotoSetError

        raise PhotoSetError(f"OpenCV's face model {name} is missing; install opencv-python-headless<5.")
    return cascade


def _overlap(a: Box, b: Box) -> float:
    ix = max(0, min(a.right, b.right) - max(a.left, b.left))
    iy = max(0, min(a.bottom, b.bottom) - max(a.top, b.top))
    inter = ix * iy
    return inter / max(1, min(a.width * a.height, b.width * b.height))


def detect_faces(gray: np.ndarray) -> list[Box]:
    """Frontal faces in an 8-bit grayscale image, most confident first (boxes in that image's pixels).

    The search runs on a copy scaled to a short side of :data:`DETECT_SIDE` (Haar cost grows with
    pixels, and a subject's face is never tiny). Faces smaller than 24 px there (about 9% of the
    short side) are ignored: they are background people, not the subject.
    """
    import cv2
    import numpy as np

    h, w = gray.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(1, min(h, w)))
    small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                 interpolation=cv2.INTER_AREA)
    min_face = max(24, int(0.075 * min(small.shape[:2])))
    found, _levels, weights = _cascade("haarcascade_frontalface_default.xml").detectMultiScale3(
        small, scaleFactor=1.1, minNeighbors=5, minSize=(min_face, min_face), outputRejectLevels=True
    )
    # Most confident first: a false positive (a patterned shirt, a poster) can be larger than the face.
    ranked = sorted(zip(found, np.ravel(weights), strict=True), key=lambda item: -float(item[1]))
    boxes = [Box(int(x), int(y), int(x + bw), int(y + bh)).scaled(1 / scale) for (x, y, bw, bh), _ in ranked]
    kept: list[Box] = []
    for box in boxes:  # drop a box mostly overlapping a surer one (the same face found twice)
        if all(_overlap(box, k) < 0.5 for k in kept):
            kept.append(box)
    return kept


def _place(centre: float, side: int, limit: int) -> int:
    """Start of a window of ``side`` centred on ``centre`` and shifted to fit in ``[0, limit)``."""
    return int(min(max(0, round(centre - side / 2)), limit - side))


def face_crop(size: tuple[int, int], face: Box, *, margin: float = FACE_MARGIN) -> Box:
    """The square around ``face`` with ``margin`` times its size, kept inside an image of ``size``."""
    w, h = size
    side = int(min(w, h, max(face.width, face.height) * margin))
    cx, cy = face.centre
    left = _place(cx, side, w)
    top = _place(cy + (0.5 - FACE_CENTRE_Y) * side, side, h)
    return Box(left, top, left + side, top + side)


def saliency_crop(gray: np.ndarray) -> Box:
    """The largest square, slid along the long axis to where the detail (edge energy) is, with a pull
    towards the centre: pets and objects are rarely photographed against a busy background."""
    import cv2
    import numpy as np

    h, w = gray.shape[:2]
    side = min(w, h)
    if w == h:
        return Box(0, 0, w, h)
    blur = cv2.GaussianBlur(gray, (0, 0), 1.5)
    energy = np.abs(cv2.Sobel(blur, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(blur, cv2.CV_32F, 0, 1))
    profile = energy.sum(axis=0 if w > h else 1).astype(np.float64)
    length = profile.shape[0]
    windows = np.convolve(profile, np.ones(side), mode="valid")  # energy of each window start
    starts = np.arange(windows.shape[0])
    centre_start = (length - side) / 2
    prior = 1.0 - 0.3 * np.abs(starts - centre_start) / max(1.0, centre_start)
    start = int(np.argmax(windows * prior))
    return Box(start, 0, start + side, h) if w > h else Box(0, start, w, start + side)
