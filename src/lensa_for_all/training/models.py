"""Loading a Stable Diffusion base model's parts (1.x/2.x or SDXL), with errors a user can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError
from ..families import SD1, ModelFamily, detect_family

__all__ = ["check_base_model", "check_model_index", "load_component", "load_training_vae"]


def check_base_model(base_model: str, revision: str | None = None, family: str = "auto") -> ModelFamily:
    """The family of ``base_model``; :class:`ModelNotFoundError` unless it is an SD 1.x/2.x or SDXL pipeline.

    A local folder is checked on disk; a Hub id is checked by fetching its ``model_index.json``
    (from the cache when offline).
    """
    path = Path(base_model)
    index: Any
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{base_model} is not a diffusers pipeline folder (no model_index.json). Point base_model at a "
                "Stable Diffusion (1.x/2.x or XL) folder saved with save_pretrained, or at a Hub id."
            )
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    else:
        try:
            from huggingface_hub import hf_hub_download

            local = hf_hub_download(base_model, "model_index.json", revision=revision)
        except Exception as exc:  # the Hub raises many types: not found, offline, gated, bad revision
            raise ModelNotFoundError(
                f"Base model {base_model!r} (revision {revision or 'main'}) cannot be found: {exc}. Check the id "
                "and revision, log in with `hf auth login` for gated models, or pass a local folder."
            ) from exc
        index = json.loads(Path(local).read_text(encoding="utf-8"))
    return check_model_index(base_model, index, family)


def check_model_index(base_model: str, index: Any, family: str = "auto") -> ModelFamily:
    """The family whose pipeline ``index`` (a ``model_index.json``) describes; :class:`ModelNotFoundError` if none."""
    return detect_family(base_model, index, family)


def load_component(base_model: str, name: str, revision: str | None = None, family: ModelFamily = SD1,
                   **kwargs: Any) -> Any:
    """``from_pretrained`` of one part (``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``, and
    SDXL's ``text_encoder_2``, ``tokenizer_2``)."""
    import importlib

    module, cls_name = family.loader(name)
    cls = getattr(importlib.import_module(module), cls_name)
    try:
        return cls.from_pretrained(base_model, subfolder=name, revision=revision, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"Cannot load the {name} of base model {base_model!r}: {exc}. Check that it is a complete "
            f"{family.label} pipeline."
        ) from exc


def load_training_vae(config: Any, family: ModelFamily, mixed_precision: str) -> Any:
    """The VAE that encodes the training latents: the base model's, or ``config.fp16_vae`` when the family's VAE
    overflows in float16 and training runs in fp16 (SDXL: ``madebyollin/sdxl-vae-fp16-fix``, same latents)."""
    if not (family.vae_overflows_in_fp16 and mixed_precision == "fp16" and config.fp16_vae):
        return load_component(config.base_model, "vae", config.revision, family)
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(config.fp16_vae)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"Cannot load the fp16-safe VAE {config.fp16_vae!r} (TrainingConfig.fp16_vae): {exc}. Download it once "
            "while online, point fp16_vae at a local copy, or set fp16_vae=None (with bf16) to use the base's VAE."
        ) from exc
