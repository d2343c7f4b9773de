"""Training images in, cached latents out.

The reference script runs the VAE encoder on every step (16% of its step time). Here every image is
encoded once, before training; the latent *distribution* (mean and std) is kept so each step still
draws a fresh sample, exactly as the reference does, at the cost of one ``randn``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import PhotoSetError

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "list_images", "load_training_image", "LatentCache", "PixelSource", "encode_latents",
           "load_pixels", "MIN_PHOTOS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIN_PHOTOS = 3


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The images of a folder in a stable order.

    A folder written by ``PhotoSet.prepare`` has a ``manifest.json``; when it lists files
    (``{"photos": [{"file": ...}, ...]}`` or ``{"files": [...]}``) that order is used, otherwise
    the images are sorted by name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoSetError(f"Photo folder {folder} does not exist or is not a folder.")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        listed = _manifest_files(data)
        if listed:
            chosen = [folder / name for name in listed if (folder / name).is_file()]
            if chosen:
                return chosen
    return found


def _manifest_files(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return []
    entries = data.get("photos") or data.get("files") or data.get("images") or []
    names: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, dict):
            name = entry.get("file") or entry.get("path") or entry.get("name") or entry.get("output")
            if isinstance(name, str):
                names.append(name)
    return [n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES and "/" not in n.strip("./")]


def load_training_image(path: Path, resolution: int, *, center_crop: bool = True, crop_seed: int = 0) -> Image.Image:
    """Open ``path`` (never modifying it), fix EXIF orientation, resize the short side and crop square."""
    import random

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            img = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise PhotoSetError(f"Cannot read image {path}: {exc}. Remove it or replace it with a valid photo.") from exc
    w, h = img.size
    scale = resolution / min(w, h)
    if scale != 1:
        img = img.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                         Image.Resampling.BICUBIC)
    w, h = img.size
    if center_crop:
        left, top = (w - resolution) // 2, (h - resolution) // 2
    else:
        rng = random.Random(f"{crop_seed}:{path.name}")
        left, top = rng.randint(0, w - resolution), rng.randint(0, h - resolution)
    return img.crop((left, top, left + resolution, top + resolution))


def _to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    import numpy as np
    import torch

    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # N,H,W,3 in 0..255
    return torch.from_numpy(arr).permute(0, 3, 1, 2).div_(127.5).sub_(1.0).contiguous()


@attrs.define
class LatentCache:
    """Latent distributions of a set of images: ``mean`` and ``std`` of shape (N, V, C, h, w).

    ``V`` is 2 when horizontal flips were encoded too (index 1 is the flipped image), else 1.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @property
    def num_images(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.mean.shape[1])

    def dist(self, index: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the latent distribution of images ``index`` in views ``view``."""
        return self.mean[index, view], self.std[index, view]


@attrs.define
class PixelSource:
    """``cache_latents=False``: pixels kept, the VAE encodes them at every step (as the reference does).

    Same interface as :class:`LatentCache`; costs VAE time per step and keeps the VAE in memory.
    """

    pixels: torch.Tensor  # (N, V, 3, H, W) in [-1, 1]
    vae: Any

    @property
    def num_images(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.pixels.shape[1])

    def dist(self, index: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        with torch.no_grad():
            batch = self.pixels[index, view].to(device=self.vae.device, dtype=self.vae.dtype)
            d = self.vae.encode(batch).latent_dist
        return d.mean.float().cpu(), d.std.float().cpu()


def load_pixels(paths: Sequence[Path], resolution: int, *, center_crop: bool, flips: bool,
                crop_seed: int = 0) -> torch.Tensor:
    """The images as a (N, V, 3, H, W) tensor in [-1, 1]; V = 2 with mirrored copies when ``flips``."""
    import torch

    pixels = _to_tensor([load_training_image(p, resolution, center_crop=center_crop, crop_seed=crop_seed)
                         for p in paths])
    views = [pixels, torch.flip(pixels, dims=[3])] if flips else [pixels]
    return torch.stack(views, dim=1).contiguous()


def encode_latents(vae: Any, paths: Sequence[Path], resolution: int, *, center_crop: bool, flips: bool,
                   batch_size: int = 8, crop_seed: int = 0) -> LatentCache:
    """Encode every image once (and its mirror image when ``flips``) with ``vae``; keep mean and std."""
    import torch

    device, dtype = vae.device, vae.dtype
    means, stds = [], []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            chunk = [load_training_image(p, resolution, center_crop=center_crop, crop_seed=crop_seed)
                     for p in paths[start:start + batch_size]]
            pixels = _to_tensor(chunk)
            views = [pixels, torch.flip(pixels, dims=[3])] if flips else [pixels]
            batch = torch.cat(views).to(device=device, dtype=dtype)
            dist = vae.encode(batch).latent_dist
            n = len(chunk)
            mean = dist.mean.float().reshape(len(views), n, *dist.mean.shape[1:]).transpose(0, 1)
            std = dist.std.float().reshape(len(views), n, *dist.std.shape[1:]).transpose(0, 1)
            means.append(mean.clone())
            stds.append(std.clone())
    return LatentCache(mean=torch.cat(means).contiguous(), std=torch.cat(stds).contiguous())
