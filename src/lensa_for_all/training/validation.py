"""Validation images: fixed prompts and seeds, so images from different steps can be compared."""

from __future__ import annotations

from typing import Any

from ..config import TrainingConfig

__all__ = ["generate_validation_images"]


def generate_validation_images(config: TrainingConfig, unet: Any, text_encoder: Any, vae: Any, device: Any) -> list[Any]:
    """One image per validation prompt, seeded with ``config.seed`` (the same noise at every step)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from .models import load_component

    tokenizer = load_component(config.base_model, "tokenizer", config.revision)
    scheduler = DPMSolverMultistepScheduler.from_config(
        load_component(config.base_model, "scheduler", config.revision).config)
    pipe: Any = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    was_training = unet.training, text_encoder.training
    unet.eval()
    text_encoder.eval()
    images = []
    try:
        with torch.inference_mode():
            for i, prompt in enumerate(config.validation_prompt_texts):
                gen = torch.Generator(device="cpu").manual_seed(config.seed + i)
                out = pipe(prompt, num_inference_steps=config.validation_inference_steps, height=config.resolution,
                           width=config.resolution, generator=gen)
                images.append(out.images[0])
    finally:
        unet.train(was_training[0])
        text_encoder.train(was_training[1])
    return images
