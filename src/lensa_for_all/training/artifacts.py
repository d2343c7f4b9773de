"""The output folder: weights, ``training_config.json``, ``lensa_manifest.json`` and a model card.

``lensa_manifest.json`` is what :class:`AvatarModel` reads; its keys are documented in
docs/training.md and only ever added to (``format_version`` changes if one is removed).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic, write_text_atomic
from ..config import TrainingConfig
from ..families import FAMILIES, SD1, ModelFamily

__all__ = ["MANIFEST_NAME", "CONFIG_NAME", "METRICS_NAME", "write_artifacts", "build_manifest", "model_card"]

MANIFEST_NAME = "lensa_manifest.json"
CONFIG_NAME = "training_config.json"
METRICS_NAME = "metrics.json"
FORMAT_VERSION = 1


def _library_version() -> str:
    from ..version import __version__

    return __version__


def hub_base_model(base_model: str) -> str | None:
    """``base_model`` when it names a Hub repository, ``None`` for a local folder (its path is private)."""
    import re

    if Path(base_model).exists() or base_model.startswith((".", "/", "~")) or "\\" in base_model:
        return None
    return base_model if re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", base_model) else None


def build_manifest(config: TrainingConfig, metrics: dict[str, Any], *, prediction_type: str,
                   files: Sequence[str]) -> dict[str, Any]:
    from .lora import DIFFUSERS_LORA_NAME, kohya_lora_name

    return {
        "format_version": FORMAT_VERSION,
        "method": config.method,
        "base_model": config.base_model,
        "revision": config.revision,
        "token": config.token,
        "subject_class": config.subject_class,
        "instance_prompt": config.instance_prompt_text,
        "class_prompt": config.class_prompt_text if config.with_prior_preservation else None,
        "resolution": config.resolution,
        "prediction_type": prediction_type,
        "steps": metrics.get("steps"),
        "final_loss": metrics.get("final_loss"),
        "metrics": metrics,
        "train_text_encoder": config.train_text_encoder,
        "lora_weights": DIFFUSERS_LORA_NAME if config.method == "lora" else None,
        "kohya_weights": kohya_lora_name(config.token) if config.method == "lora" else None,
        "lora_rank": config.lora_rank if config.method == "lora" else None,
        "lora_alpha": config.effective_lora_alpha if config.method == "lora" else None,
        "files": sorted(files),
        "library": "lensa-for-all",
        "library_version": _library_version(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def model_card(config: TrainingConfig, manifest: dict[str, Any]) -> str:
    """A Hugging Face model card: metadata through ``huggingface_hub.ModelCardData``, then usage and settings.

    The YAML is written by ``huggingface_hub`` so any prompt (``:``, ``#``, quotes, a leading ``*``,
    non-ASCII) survives ``ModelCard.load``. ``base_model`` is set only for a Hub id: a local folder's
    path or name is private and means nothing on the Hub. Fields follow the Hub's DreamBooth (LoRA)
    cards: license, ``instance_prompt``, a widget with that prompt, ``library_name`` and tags.
    """
    from huggingface_hub import ModelCard, ModelCardData

    is_lora = config.method == "lora"
    hub_base = hub_base_model(config.base_model)
    tags = ["text-to-image", "diffusers", "stable-diffusion", "stable-diffusion-diffusers", "dreambooth",
            "diffusers-training", "lensa-for-all"]
    if is_lora:
        tags.insert(2, "lora")
    prompt = config.instance_prompt_text
    data = ModelCardData(
        license="creativeml-openrail-m", library_name="diffusers", base_model=hub_base, tags=tags,
        instance_prompt=prompt, widget=[{"text": prompt}],
        inference=hub_base is not None,  # the Hub's widget can only run on a base model the Hub has
    )
    base_text = f"[{hub_base}](https://huggingface.co/{hub_base})" if hub_base else "a local Stable Diffusion model"
    example = prompt + ", portrait, studio lighting"
    pipeline = FAMILIES.get(str(manifest.get("model_family")), SD1).pipeline_class_name
    if is_lora:
        base_load = repr(hub_base) if hub_base else '"path/to/the/base/model"'
        usage = (
            f"```python\nfrom diffusers import {pipeline}\n\n"
            f"pipe = {pipeline}.from_pretrained({base_load})\n"
            "pipe.load_lora_weights(\"path/to/this/folder\")\n"
            f"image = pipe({example!r}).images[0]\n```\n\n"
            f"For AUTOMATIC1111 or ComfyUI use `{manifest['kohya_weights']}`."
        )
    else:
        usage = (
            "```python\nfrom diffusers import StableDiffusionPipeline\n\n"
            "pipe = StableDiffusionPipeline.from_pretrained(\"path/to/this/folder\")\n"
            f"image = pipe({example!r}).images[0]\n```"
        )
        if manifest.get("checkpoint_weights"):
            usage += (f"\n\nFor AUTOMATIC1111 or ComfyUI use the single file `{manifest['checkpoint_weights']}` "
                      "(original Stable Diffusion layout).")
    final_loss = manifest.get("final_loss")
    loss_txt = f"{final_loss:.4f}" if isinstance(final_loss, float) else "n/a"
    rows = [
        ("method", config.method), ("steps", manifest.get("steps")), ("resolution", config.resolution),
        ("learning rate", config.learning_rate), ("text encoder trained", config.train_text_encoder),
        ("prior preservation", config.with_prior_preservation),
        ("prediction type", manifest.get("prediction_type")), ("final loss", loss_txt),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    body = f"""
# DreamBooth {'LoRA' if is_lora else 'fine-tune'} of {base_text}

Trained with [lensa-for-all](https://github.com/lensa-for-all/lensa-for-all) {manifest['library_version']}.
Use the token **{_markdown_text(config.token)}** in prompts; it was trained with the prompt
`{_code_text(prompt)}`.

## Use

{usage}

## Training

| setting | value |
| --- | --- |
{table}

The full configuration is in `training_config.json`, the run's figures in `lensa_manifest.json`.
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def _markdown_text(text: str) -> str:
    return "".join("\\" + c if c in "\\`*_[]#<>|" else c for c in text)


def _code_text(text: str) -> str:
    return text.replace("`", "\u02cb")


def _save_full_pipeline(output_dir: Path, config: TrainingConfig, unet: Any, text_encoder: Any | None) -> None:
    """The canonical Hub layout (see ``pipeline_folder``), not ``save_pretrained``'s transformers-5 one."""
    from .pipeline_folder import write_pipeline_folder

    write_pipeline_folder(output_dir, config.base_model, config.revision, unet, text_encoder)


def checkpoint_name(token: str) -> str:
    """The single-file (original SD layout) checkpoint a full fine-tune writes beside its diffusers folders."""
    return f"{token}_checkpoint.safetensors"


def write_artifacts(output_dir: Path, config: TrainingConfig, unet: Any, text_encoder: Any | None, *,
                    metrics: dict[str, Any], losses: Sequence[float], prediction_type: str,
                    family: ModelFamily | None = None, text_encoder_2: Any | None = None) -> dict[str, Any]:
    """Write everything; return the manifest. ``family`` is the base model's (SD 1.x/2.x when not given);
    SDXL's second text encoder, when trained, is ``text_encoder_2``."""
    import torch

    from .lora import save_lora

    output_dir.mkdir(parents=True, exist_ok=True)
    if config.method == "lora":
        from .lora import kohya_metadata

        metadata = kohya_metadata(
            rank=config.lora_rank, alpha=config.effective_lora_alpha, resolution=config.resolution,
            steps=metrics.get("steps"), token=config.token, subject_class=config.subject_class,
            instance_prompt=config.instance_prompt_text,
            base_model=hub_base_model(config.base_model) or Path(config.base_model).name,
            v2=int(getattr(unet.config, "cross_attention_dim", 768)) == 1024,  # SD 2.x's OpenCLIP width
            v_prediction=prediction_type == "v_prediction", learning_rate=config.learning_rate,
            num_photos=metrics.get("num_photos"), seed=config.seed, train_text_encoder=config.train_text_encoder,
            family=family)
        save_lora(output_dir, unet, text_encoder, alpha=config.effective_lora_alpha, rank=config.lora_rank,
                  token=config.token, metadata=metadata, family=family, text_encoder_2=text_encoder_2)
    else:
        unet = unet.to(torch.float32)
        if text_encoder is not None:
            text_encoder = text_encoder.to(torch.float32)
        _save_full_pipeline(output_dir, config, unet, text_encoder)
        from .single_file import write_single_file

        # The one-file checkpoint A1111's model dropdown and ComfyUI's CheckpointLoaderSimple load.
        write_single_file(output_dir, output_dir / checkpoint_name(config.token), title=f"{config.token} "
                          f"{config.subject_class} (lensa-for-all)")
    config.to_json(output_dir / CONFIG_NAME)
    write_json_atomic(output_dir / METRICS_NAME, {**metrics, "losses": list(losses)})
    files = [str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file()
             and p.name not in (MANIFEST_NAME, "README.md")]
    manifest = build_manifest(config, metrics, prediction_type=prediction_type, files=files)
    manifest["model_family"] = (family or SD1).name  # AvatarModel refuses a LoRA on another family's base
    manifest["checkpoint_weights"] = checkpoint_name(config.token) if config.method == "full" else None
    if config.method == "full":  # A1111's "Model hash", computed once here instead of at every load
        from .single_file import a1111_model_hash

        checkpoint = output_dir / checkpoint_name(config.token)
        manifest["checkpoint_hash"] = {"sha256_10": a1111_model_hash(checkpoint), "size": checkpoint.stat().st_size}
    write_text_atomic(output_dir / "README.md", model_card(config, manifest))
    write_json_atomic(output_dir / MANIFEST_NAME, manifest)
    return manifest
