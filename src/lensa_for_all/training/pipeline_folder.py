"""A full fine-tune written as a diffusers folder in the layout the Hub's Stable Diffusion repositories have.

``StableDiffusionPipeline.save_pretrained`` under transformers 5 writes the CLIP text encoder without
its ``text_model.`` key prefix and the tokenizer as ``tokenizer.json`` only, and a scheduler re-created
from the training class (DDPM). transformers 4.x and 5.5 load such a folder with a *randomly initialised*
text encoder (only a warning) or fail on the tokenizer. So only the trained parts are serialised (the
UNet by diffusers, the text encoder with canonical keys); everything else is the base model's own files,
copied: tokenizer (``vocab.json`` + ``merges.txt``), scheduler config (its inference scheduler), VAE.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic

__all__ = ["write_pipeline_folder", "canonical_text_encoder_state", "base_folder", "TEXT_MODEL_PREFIX"]

TEXT_MODEL_PREFIX = "text_model."
# what is read from the base model; weights only as safetensors (pickles are never copied)
_BASE_PATTERNS = ["model_index.json", "scheduler/*", "tokenizer/*", "vae/config.json",
                  "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                  "text_encoder/model.safetensors"]


def canonical_text_encoder_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """CLIP text-encoder weights keyed as the Hub's checkpoints are (``text_model.`` prefix)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        canonical = key if key.startswith((TEXT_MODEL_PREFIX, "text_projection")) else TEXT_MODEL_PREFIX + key
        out[canonical] = value
    return out


def base_folder(base_model: str, revision: str | None = None) -> Path:
    """The base model's files on disk: the folder itself, or its Hub snapshot (from the cache when offline)."""
    path = Path(base_model)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(base_model, revision=revision, allow_patterns=_BASE_PATTERNS))


def _save_safetensors(state: Mapping[str, Any], dest: Path) -> None:
    from safetensors.torch import save_file

    from ..atomic import atomic_path

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(dest) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def _copy(src: Path, dest: Path) -> None:
    from ..atomic import atomic_path

    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _write_text_encoder(dest: Path, base: Path, text_encoder: Any | None) -> None:
    from safetensors.torch import load_file

    dest.mkdir(parents=True, exist_ok=True)
    _copy(base / "text_encoder" / "config.json", dest / "config.json")
    if text_encoder is not None:
        state = text_encoder.state_dict()
    else:
        weights = base / "text_encoder" / "model.safetensors"
        if not weights.is_file():
            from .models import load_component

            state = load_component(str(base), "text_encoder").state_dict()
        else:
            state = load_file(str(weights))
    _save_safetensors(canonical_text_encoder_state(state), dest / "model.safetensors")


def _write_vae(dest: Path, base: Path) -> None:
    weights = base / "vae" / "diffusion_pytorch_model.safetensors"
    if weights.is_file():
        _copy(base / "vae" / "config.json", dest / "config.json")
        _copy(weights, dest / "diffusion_pytorch_model.safetensors")
        return
    from .models import load_component  # a base with pickled VAE weights only: re-save it as safetensors

    load_component(str(base), "vae").save_pretrained(dest, safe_serialization=True)


def _model_index(base: Path) -> dict[str, Any]:
    index: dict[str, Any] = json.loads((base / "model_index.json").read_text(encoding="utf-8"))
    for part in ("safety_checker", "feature_extractor", "image_encoder"):
        if part in index:
            index[part] = [None, None]
    index["requires_safety_checker"] = False
    return index


def write_pipeline_folder(output_dir: Path, base_model: str, revision: str | None, unet: Any,
                          text_encoder: Any | None) -> None:
    """Write ``output_dir`` as a loadable SD pipeline folder: trained UNet (and text encoder), base's rest."""
    base = base_folder(base_model, revision)
    output_dir.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(output_dir / "unet", safe_serialization=True)
    _write_text_encoder(output_dir / "text_encoder", base, text_encoder)
    _write_vae(output_dir / "vae", base)
    for part in ("tokenizer", "scheduler"):
        src = base / part
        if not src.is_dir():
            from ..errors import ModelNotFoundError

            raise ModelNotFoundError(f"The base model {base_model!r} has no {part}/ folder; it is not a complete "
                                     "Stable Diffusion pipeline.")
        for file in sorted(p for p in src.iterdir() if p.is_file()):
            _copy(file, output_dir / part / file.name)
    write_json_atomic(output_dir / "model_index.json", _model_index(base))
