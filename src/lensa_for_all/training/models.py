"""Loading a Stable Diffusion 1.x/2.x base model's parts, with errors a user can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError

__all__ = ["check_base_model", "check_model_index", "load_component"]

_REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_LOADERS = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "scheduler": ("diffusers", "DDPMScheduler"),
}


def check_base_model(base_model: str, revision: str | None = None) -> None:
    """Raise :class:`ModelNotFoundError` unless ``base_model`` is a Stable Diffusion 1.x/2.x pipeline.

    A local folder is checked on disk; a Hub id is checked by fetching its ``model_index.json``
    (from the cache when offline).
    """
    path = Path(base_model)
    index: Any
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{base_model} is not a diffusers pipeline folder (no model_index.json). Point base_model at a "
                "Stable Diffusion 1.x/2.x folder saved with save_pretrained, or at a Hub id."
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
    check_model_index(base_model, index)


def check_model_index(base_model: str, index: Any) -> None:
    """Raise :class:`ModelNotFoundError` unless ``index`` (a ``model_index.json``) is an SD 1.x/2.x pipeline's."""
    if not isinstance(index, dict):
        raise ModelNotFoundError(f"{base_model}'s model_index.json is not a JSON object; the model is damaged.")
    missing = [c for c in _REQUIRED if c not in index]
    if missing or "XL" in str(index.get("_class_name", "")) or "text_encoder_2" in index:
        raise ModelNotFoundError(
            f"{base_model} is a {index.get('_class_name', 'unknown')} pipeline, not Stable Diffusion 1.x/2.x "
            f"(missing {missing or 'nothing'}). Use e.g. stable-diffusion-v1-5/stable-diffusion-v1-5."
        )


def load_component(base_model: str, name: str, revision: str | None = None, **kwargs: Any) -> Any:
    """``from_pretrained`` of one part (``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``)."""
    import importlib

    module, cls_name = _LOADERS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    try:
        return cls.from_pretrained(base_model, subfolder=name, revision=revision, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"Cannot load the {name} of base model {base_model!r}: {exc}. Check that it is a complete "
            "Stable Diffusion 1.x/2.x pipeline."
        ) from exc
