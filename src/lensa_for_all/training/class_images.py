"""Prior-preservation class images: generated once with the base model, cached on disk, reused.

The cache key is (base model, revision, class prompt, resolution, count): a second person trained on
the same base model at the same resolution reuses the same 200 images instead of paying for them
again. A folder is filled beside its final name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from .progress import ProgressCallback, TrainingProgress

__all__ = ["class_image_cache_key", "default_cache_root", "ensure_class_images", "CACHE_ENV"]

CACHE_ENV = "LENSA_CLASS_IMAGE_CACHE"


def default_cache_root() -> Path:
    """``$LENSA_CLASS_IMAGE_CACHE``, else ``~/.cache/lensa_for_all/class_images``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lensa_for_all" / "class_images"


def _model_identity(base_model: str) -> str:
    path = Path(base_model)
    return str(path.resolve()) if path.exists() else base_model


def class_image_cache_key(base_model: str, revision: str | None, class_prompt: str, resolution: int,
                          count: int) -> str:
    payload = json.dumps([_model_identity(base_model), revision, class_prompt, resolution, count])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def ensure_class_images(config: TrainingConfig, *, cache_root: Path | None = None, device: Any = None,
                        progress: ProgressCallback | None = None) -> Path:
    """Return a folder holding ``config.num_class_images`` class images, generating them if not cached."""
    import torch

    root = Path(cache_root) if cache_root else default_cache_root()
    key = class_image_cache_key(config.base_model, config.revision, config.class_prompt_text, config.resolution,
                                config.num_class_images)
    folder = root / key
    if (folder / "key.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{key}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()

    from diffusers import DPMSolverMultistepScheduler

    from .models import check_base_model

    family = check_base_model(config.base_model, config.revision, config.model_family)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = family.pipeline_class().from_pretrained(config.base_model, revision=config.revision,
                                                   **family.pipeline_extras)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device, dtype)
    total = config.num_class_images
    batch = config.class_image_batch_size
    done = 0
    while done < total:
        n = min(batch, total - done)
        gen = torch.Generator(device="cpu").manual_seed(config.seed * 100_003 + done)
        images = pipe([config.class_prompt_text] * n, num_inference_steps=config.class_image_inference_steps,
                      height=config.resolution, width=config.resolution, generator=gen).images
        for i, img in enumerate(images):
            img.save(partial / f"class-{done + i:05d}.png")
        done += n
        if progress is not None:
            progress(TrainingProgress(step=done, total_steps=total, stage="class_images"))
    (partial / "key.json").write_text(json.dumps({
        "base_model": config.base_model, "revision": config.revision, "class_prompt": config.class_prompt_text,
        "resolution": config.resolution, "count": total,
    }, indent=2))
    del pipe
    if folder.exists():  # another run finished first; keep theirs
        shutil.rmtree(partial)
    else:
        os.replace(partial, folder)
    return folder
