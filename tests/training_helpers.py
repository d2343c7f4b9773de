"""Helpers for the training tests: synthetic photos and small, fast configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lensa_for_all.config import TrainingConfig


def make_subject_photos(folder: Path, n: int = 4, size: tuple[int, int] = (80, 72), seed: int = 0) -> Path:
    """``n`` structured RGB photos (a coloured disc on a gradient, the same 'subject' in each)."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        x = np.broadcast_to(np.linspace(0, 1, w)[None, :, None], (h, w, 1))
        y = np.broadcast_to(np.linspace(0, 1, h)[:, None, None], (h, w, 1))
        base = np.concatenate([x * 200 + 30 * i, y * 180, (1 - x) * 150 + 20], axis=2) + rng.normal(0, 8, (h, w, 3))
        img = Image.fromarray(np.clip(base, 0, 255).astype("uint8"))
        draw = ImageDraw.Draw(img)
        cx, cy = w // 2 + int(rng.integers(-6, 7)), h // 2 + int(rng.integers(-6, 7))
        draw.ellipse((cx - 18, cy - 18, cx + 18, cy + 18), fill=(220, 60 + 10 * i, 40))
        img.save(folder / f"photo-{i:02d}.png")
    return folder


def tiny_config(base_model: Path, method: str = "lora", **overrides: Any) -> TrainingConfig:
    """The person preset scaled to the tiny 64 px model: few steps, few class images."""
    settings: dict[str, Any] = dict(
        base_model=str(base_model), resolution=64, max_train_steps=4, num_class_images=2,
        class_image_inference_steps=1, class_image_batch_size=2, lora_rank=4, mixed_precision="no",
    )
    settings.update(overrides)
    return TrainingConfig.for_subject("person", method, **settings)
