"""Image quality measures used by the QC: sharpness and a perceptual hash for near-duplicates."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["BLUR_THRESHOLD", "NEAR_DUPLICATE_DISTANCE", "SHARPNESS_SIDE", "hamming", "perceptual_hash", "sharpness"]

SHARPNESS_SIDE = 512
"""Sharpness is measured after scaling the region's short side to this, so it does not depend on resolution."""

BLUR_THRESHOLD = 40.0
"""Variance of the Laplacian below which a photo is flagged as blurry (at :data:`SHARPNESS_SIDE`)."""

NEAR_DUPLICATE_DISTANCE = 6
"""Perceptual hashes this close (bits out of 64) are the same shot, resized, re-encoded or lightly edited."""


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of an 8-bit grayscale region: low means little fine detail (blur)."""
    import cv2

    h, w = gray.shape[:2]
    scale = SHARPNESS_SIDE / max(1, min(h, w))
    if abs(scale - 1.0) > 1e-3:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def perceptual_hash(gray: np.ndarray) -> int:
    """64-bit DCT hash (pHash): the signs of the lowest frequencies against their median."""
    import cv2
    import numpy as np

    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()
