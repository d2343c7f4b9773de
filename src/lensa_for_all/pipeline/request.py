"""What a run is asked for: how many avatars, in which styles and folder, with which seed and settings.

:meth:`Pipeline.run` and :meth:`Pipeline.plan` take the same arguments; both hand them to
:meth:`RunRequest.build`, so they are checked and normalised in one place, and the run state records
:meth:`RunRequest.arguments` for :meth:`Pipeline.resume` to pass back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError

__all__ = ["RunRequest", "GENERATION_KEYS", "MAX_SEED"]

# AvatarModel.load keywords and AvatarModel.generate keywords that Pipeline.run passes through.
LOAD_KEYS = ("device", "dtype")
RENDER_KEYS = ("num_inference_steps", "guidance_scale", "scheduler", "width", "height", "negative_prompt",
               "lora_scale")
GENERATION_KEYS = frozenset((*LOAD_KEYS, *RENDER_KEYS, "batch_size"))
MAX_SEED = 2**32  # image i of a pack has seed (seed + i) mod MAX_SEED


def _styles(styles: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(styles) if styles else None


def _out_dir(out_dir: str | os.PathLike[str] | None) -> Path | None:
    return Path(out_dir) if out_dir is not None else None


@attrs.frozen
class RunRequest:
    """The checked arguments of one :meth:`Pipeline.run` (``generation`` holds ``batch_size`` too, when given)."""

    num_images: int
    styles: tuple[str, ...] | None = attrs.field(converter=_styles)
    out_dir: Path | None = attrs.field(converter=_out_dir)
    seed: int | None
    magic: bool | str
    generation: Mapping[str, Any]
    keep_best: int | None = None  # keep the N of the num_images candidates most like the subject

    @classmethod
    def build(cls, num_images: int, styles: Sequence[str] | None, out_dir: str | os.PathLike[str] | None, *,
              seed: int | None, magic: bool | str, batch_size: int | None,
              generation: Mapping[str, Any], keep_best: int | None = None) -> RunRequest:
        """Check the arguments; the first problem raises a :class:`ConfigError` that names the setting."""
        unknown = sorted(set(generation) - GENERATION_KEYS)
        if unknown:
            raise ConfigError(f"Pipeline.run got unknown setting(s) {unknown}; generation settings are "
                              f"{', '.join(sorted(GENERATION_KEYS))}")
        if num_images < 1:
            raise ConfigError(f"num_images must be at least 1, not {num_images}")
        if seed is not None and not 0 <= seed < MAX_SEED:
            raise ConfigError(f"seed must be between 0 and {MAX_SEED - 1}, not {seed}")
        if keep_best is not None and not 1 <= keep_best <= num_images:
            raise ConfigError(f"keep_best={keep_best} keeps the best of num_images={num_images} candidates: it must be "
                              "between 1 and num_images (2-3 candidates per avatar kept pick better ones).")
        settings = dict(generation)
        if batch_size is not None:
            settings["batch_size"] = batch_size
        return cls(num_images, styles, out_dir, seed, magic, settings, keep_best)

    def arguments(self, out: Path) -> dict[str, Any]:
        """The keywords of :meth:`Pipeline.run` as the run state records them (``out``: the avatar folder)."""
        keep = {"keep_best": self.keep_best} if self.keep_best is not None else {}  # runs without it: as before
        return {"num_images": self.num_images, "styles": list(self.styles) if self.styles else None,
                "out_dir": str(out.resolve()), "seed": self.seed, "magic": self.magic, **self.generation, **keep}

    @property
    def load_options(self) -> dict[str, Any]:
        """The :meth:`AvatarModel.load` keywords that were set (device, dtype)."""
        return {k: self.generation[k] for k in LOAD_KEYS if self.generation.get(k) is not None}

    @property
    def render_options(self) -> dict[str, Any]:
        """The :meth:`AvatarModel.generate` keywords that were set (steps, guidance, scheduler, size, ...)."""
        return {k: self.generation[k] for k in RENDER_KEYS if self.generation.get(k) is not None}

    @property
    def batch_size(self) -> int | None:
        return self.generation.get("batch_size")
