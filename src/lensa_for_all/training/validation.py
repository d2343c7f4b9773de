"""Validation images: fixed prompts and seeds, so images from different steps can be compared."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import TrainingConfig
from ..families import SD1, ModelFamily

__all__ = ["generate_validation_images"]


def generate_validation_images(config: TrainingConfig, unet: Any, text_encoders: Mapping[str, Any], vae: Any,
                               device: Any, family: ModelFamily = SD1) -> list[Any]:
    """One image per validation prompt, seeded with ``config.seed`` (the same noise at every step).

    ``text_encoders`` maps the family's text-encoder components (``text_encoder``, SDXL's ``text_encoder_2``) to
    the models in training."""
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from .models import load_component

    tokenizers = {name: load_component(config.base_model, name, config.revision, family)
                  for name in family.tokenizer_names}
    scheduler = DPMSolverMultistepScheduler.from_config(
        load_component(config.base_model, "scheduler", config.revision, family).config)
    parts: dict[str, Any] = dict(vae=vae, unet=unet, scheduler=scheduler, **text_encoders, **tokenizers,
                                 **family.pipeline_extras)
    pipe: Any = family.pipeline_class()(**parts)
    pipe.set_progress_bar_config(disable=True)
    models = [unet, *text_encoders.values()]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    images = []
    try:
        with torch.inference_mode():
            for i, prompt in enumerate(config.validation_prompt_texts):
                gen = torch.Generator(device="cpu").manual_seed(config.seed + i)
                out = pipe(prompt, num_inference_steps=config.validation_inference_steps, height=config.resolution,
                           width=config.resolution, generator=gen)
                images.append(out.images[0])
    finally:
        for m, mode in zip(models, was_training, strict=True):
            m.train(mode)
    return images
