"""The one record of what an image is rendered from: :class:`Job`.

:class:`AvatarModel` resolves prompts, seeds and defaults into jobs; runners render them; an
:class:`~lensa_for_all.generation.pack.Avatar` is a job plus its image and provenance (it subclasses
:class:`Job`, so the fields are defined once), and its PNG text reads back into the same job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import GenerationError
from .schedulers import canonical_name

__all__ = ["Job", "batch_key"]


@attrs.frozen
class Job:
    """Everything needed to render one image, bit for bit."""

    prompt: str
    negative_prompt: str
    seed: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str
    width: int
    height: int
    lora_scale: float | None = None
    style: str | None = None

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> Job:
        """The job in an image's recorded parameters (``Avatar.parameters()``, an ``avatars.json`` entry or
        a parsed PNG text); keys that are not job fields (model, batch, hashes) are ignored.

        Raises :class:`~lensa_for_all.errors.GenerationError` when a field needed to render is missing or
        malformed, :class:`~lensa_for_all.errors.ConfigError` for an unknown scheduler name.
        """
        try:
            lora_scale = params.get("lora_scale")
            job = cls(
                prompt=str(params["prompt"]), negative_prompt=str(params.get("negative_prompt") or ""),
                seed=int(params["seed"]), num_inference_steps=int(params["num_inference_steps"]),
                guidance_scale=float(params["guidance_scale"]), scheduler=str(params["scheduler"]),
                width=int(params["width"]), height=int(params["height"]),
                lora_scale=float(lora_scale) if lora_scale is not None else None, style=params.get("style") or None,
            )
        except KeyError as exc:
            raise GenerationError(f"The image's parameters lack {exc}; it cannot be rendered again. Pass the "
                                  "parameters Avatar.parameters() or the image's PNG text records.") from exc
        except (TypeError, ValueError) as exc:
            raise GenerationError(f"The image's parameters are malformed ({exc}); it cannot be rendered "
                                  "again.") from exc
        return attrs.evolve(job, scheduler=canonical_name(job.scheduler))


def batch_key(job: Job) -> tuple[Any, ...]:
    """Jobs with equal keys can share one pipeline call."""
    return (job.num_inference_steps, job.guidance_scale, job.scheduler, job.width, job.height, job.lora_scale)
