"""Synthetic subject photos for tests, examples and benchmarks.

Each photo pastes a real subject that a PyPI package ships (scikit-image's public-domain NASA
portrait ``astronaut`` for people, the cat ``chelsea`` for pets) at a random size, place and
lighting onto a random background, so a set looks like varied shots of one subject: faces are
detectable, and no two photos are near-duplicates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["make_photos", "subject_image"]

_FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


def subject_image(kind: str = "person") -> Image.Image:
    """The real subject photo used by :func:`make_photos` (512x512 astronaut, or 451x300 cat)."""
    from PIL import Image

    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - scikit-image is in the dev extra
        raise ModuleNotFoundError(
            "make_photos needs scikit-image for its sample portraits: pip install 'lensa-for-all[dev]' "
            "or pip install scikit-image"
        ) from exc
    if kind == "person":
        return Image.fromarray(data.astronaut())
    if kind == "pet":
        return Image.fromarray(data.chelsea())
    raise ValueError(f"kind must be 'person' or 'pet', got {kind!r}")


def _background(rng: Any, size: tuple[int, int]) -> Image.Image:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    w, h = size
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, h if rng.random() < 0.5 else w)[:, None]
    ramp = (a[None, :] * (1 - t) + b[None, :] * t).astype(np.uint8)
    arr = np.broadcast_to(ramp[:, None, :], (h, w, 3)) if ramp.shape[0] == h else \
        np.broadcast_to(ramp[None, :, :], (h, w, 3))
    bg = Image.fromarray(np.ascontiguousarray(arr))
    draw = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(w // 8, w // 2)), y0 + int(rng.integers(h // 8, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    noise = rng.normal(0, 6, (h, w, 3))
    out = np.clip(np.asarray(bg.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32) + noise, 0, 255)
    return Image.fromarray(out.astype(np.uint8))


def make_photos(path: str | os.PathLike[str], n: int, *, size: tuple[int, int] = (640, 800), seed: int = 0,
                kind: str = "person", format: str = "jpeg", quality: int = 90) -> list[Path]:
    """Write ``n`` synthetic photos of one subject into ``path`` and return their paths.

    ``size`` is (width, height); ``kind`` is ``"person"`` (a detectable face) or ``"pet"``; ``format``
    is ``"jpeg"``, ``"png"`` or ``"webp"``. The same arguments give the same files.
    """
    import numpy as np
    from PIL import Image, ImageEnhance

    if n < 0:
        raise ValueError("n must be >= 0")
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {sorted(_FORMATS)}, got {format!r}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    subject = subject_image(kind)
    rng = np.random.default_rng(seed)
    w, h = size
    files = []
    for i in range(n):
        canvas = _background(rng, size)
        frac = float(rng.uniform(0.55, 0.9))
        sw = max(16, int(min(w, h) * frac))
        sh = max(16, int(sw * subject.height / subject.width))
        piece = subject.resize((sw, sh), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            piece = piece.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        piece = ImageEnhance.Brightness(piece).enhance(float(rng.uniform(0.8, 1.2)))
        piece = ImageEnhance.Contrast(piece).enhance(float(rng.uniform(0.85, 1.15)))
        x = int(rng.integers(0, max(1, w - sw + 1)))
        y = int(rng.integers(0, max(1, h - sh + 1)))
        canvas.paste(piece, (x, y))
        dest = out / f"{kind}_{i:02d}{_FORMATS[format]}"
        if format == "png":
            canvas.save(dest, format="PNG")
        else:
            canvas.save(dest, format=format.upper(), quality=quality)
        files.append(dest)
    return files
