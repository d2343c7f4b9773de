"""LoRA adapters (peft) on the UNet and text encoder, and their export in two formats.

* diffusers format, ``pytorch_lora_weights.safetensors``: ``pipe.load_lora_weights(folder)`` loads it;
* kohya/A1111 format, ``<name>_kohya.safetensors``: AUTOMATIC1111, ComfyUI and SD.Next load it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..families import ModelFamily

__all__ = ["add_lora", "lora_state_dicts", "save_lora", "DIFFUSERS_LORA_NAME", "kohya_lora_name", "kohya_metadata",
           "tensor_data_hash"]

DIFFUSERS_LORA_NAME = "pytorch_lora_weights.safetensors"


def kohya_lora_name(token: str) -> str:
    return f"{token}_lora_kohya.safetensors"


def add_lora(model: Any, *, rank: int, alpha: float, dropout: float, target_modules: tuple[str, ...]) -> None:
    """Freeze ``model`` and add a trainable LoRA adapter to ``target_modules``."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=dropout,
        init_lora_weights="gaussian",
        target_modules=list(target_modules),
    )
    if hasattr(model, "set_adapters"):  # diffusers models: keeps their adapter bookkeeping
        model.add_adapter(config)
    else:  # transformers' own add_adapter insists on a newer peft than diffusers needs
        inject_adapter_in_model(config, model)


def lora_state_dicts(unet: Any, text_encoder: Any | None, *, scale: float = 1.0
                     ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The adapters' weights in diffusers naming (UNet, text encoder or ``None``), as float32 CPU tensors.

    The diffusers format has no alpha (a loader assumes alpha = rank), so the up-projections are
    multiplied by ``scale`` = alpha / rank: the file then gives the trained result in any loader.
    """
    te = _diffusers_state(text_encoder, scale, text_encoder=True) if text_encoder is not None else None
    return _diffusers_state(unet, scale), te


def _diffusers_state(model: Any, scale: float, *, text_encoder: bool = False) -> dict[str, Any]:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    sd = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
    out = {}
    for k, v in sd.items():
        t = v.detach().float().cpu()
        if scale != 1.0 and (".up." in k or ".lora_B." in k):
            t = t * scale
        out[_canonical_te_key(k) if text_encoder else k] = t.contiguous()
    return out


def _canonical_te_key(key: str) -> str:
    """CLIP text-encoder keys as the ecosystem writes them (``text_model.encoder...``).

    transformers 5 dropped the ``text_model`` level from ``CLIPTextModel``; LoRA files written with
    it would not load where transformers 4 runs (A1111, ComfyUI, the SageMaker containers).
    """
    if key.startswith(("encoder.", "embeddings.", "final_layer_norm.")):
        return "text_model." + key
    return key


def kohya_metadata(*, rank: int, alpha: float, resolution: int, steps: int | None, token: str, subject_class: str,
                   instance_prompt: str, base_model: str, v2: bool, v_prediction: bool, learning_rate: float,
                   num_photos: int | None = None, seed: int | None = None,
                   train_text_encoder: bool = False, family: ModelFamily | None = None) -> dict[str, str]:
    """The ``ss_*`` metadata kohya's sd-scripts write, which A1111's LoRA tab and civitai read.

    A1111 files the LoRA under SD 2.x when ``ss_v2`` is ``"True"`` (else SD 1.x) and offers the most
    frequent tags of ``ss_tag_frequency`` as trigger words; kohya's dataset folder is named
    ``<repeats>_<token> <class>``. Values are strings, as in every safetensors header. An SDXL LoRA
    (``family``) is filed as ``sdxl_base_v1-0``.
    """
    from ..families import SD1

    version, architecture = (family or SD1).kohya_version(v2=v2, v_prediction=v_prediction)
    images = int(num_photos or 1)
    folder = f"1_{token} {subject_class}"
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(int(rank)),
        "ss_network_alpha": str(float(alpha)),
        "ss_base_model_version": version,
        "ss_v2": str(bool(v2)),
        "ss_v_parameterization": str(bool(v_prediction)),
        "ss_sd_model_name": base_model,
        "ss_resolution": f"({int(resolution)}, {int(resolution)})",
        "ss_steps": str(int(steps or 0)),
        "ss_max_train_steps": str(int(steps or 0)),
        "ss_learning_rate": str(float(learning_rate)),
        "ss_num_train_images": str(images),
        "ss_seed": str(seed) if seed is not None else "None",
        "ss_network_train_unet_only": str(not train_text_encoder),
        "ss_output_name": kohya_lora_name(token).removesuffix(".safetensors"),
        "ss_tag_frequency": json.dumps({folder: {token: images, instance_prompt: images}}),
        "ss_dataset_dirs": json.dumps({folder: {"n_repeats": 1, "img_count": images}}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.title": f"{token} {subject_class}",
        "modelspec.trigger_phrase": token,
        "modelspec.prediction_type": "v" if v_prediction else "epsilon",
        "modelspec.resolution": f"{int(resolution)}x{int(resolution)}",
    }


def tensor_data_hash(tensors: Mapping[str, Any]) -> str:
    """kohya's ``sshs_model_hash``: SHA-256 of the tensor data as safetensors lays it out (header excluded).

    A1111 takes a LoRA's short hash from this field when present, else computes the same from the file.
    """
    import hashlib

    from safetensors.torch import save

    blob = save(dict(tensors))
    header_len = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + header_len:]).hexdigest()


def save_lora(output_dir: Path, unet: Any, text_encoder: Any | None, *, alpha: float, rank: int,
              token: str, metadata: Mapping[str, str] | None = None, family: ModelFamily | None = None,
              text_encoder_2: Any | None = None) -> list[Path]:
    """Write both formats into ``output_dir``; return the files written.

    ``metadata`` (see :func:`kohya_metadata`) goes into the kohya file's header. ``family`` names the text
    encoders in both files (SDXL: ``text_encoder_2`` too, ``lora_te1_``/``lora_te2_`` in kohya's naming).
    """
    import torch
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from ..atomic import atomic_path
    from ..families import SD1

    family = family or SD1
    scale = alpha / rank
    encoders = {name: model for name, model in zip(family.text_encoder_names, (text_encoder, text_encoder_2),
                                                   strict=False) if model is not None}
    output_dir.mkdir(parents=True, exist_ok=True)
    dest = output_dir / DIFFUSERS_LORA_NAME
    layers = {f"{name}_lora_layers": _diffusers_state(model, scale, text_encoder=True)
              for name, model in encoders.items()}
    with atomic_path(dest) as tmp:
        family.pipeline_class().save_lora_weights(
            tmp.parent, unet_lora_layers=_diffusers_state(unet, scale), weight_name=tmp.name,
            safe_serialization=True, **layers,
        )

    peft_sd = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    for name, model in encoders.items():
        peft_sd.update({f"{name}.{_canonical_te_key(k)}": v for k, v in get_peft_model_state_dict(model).items()})
    # diffusers' converter writes SDXL's names (lora_te1_, lora_te2_); the family says what its files use
    written = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    renames = {written[name]: family.kohya_text_encoder_prefixes[name] for name in encoders}
    kohya = {}
    for k, v in convert_state_dict_to_kohya(peft_sd).items():
        prefix = next((p for p in renames if k.startswith(p)), None)
        kohya[renames[prefix] + k[len(prefix):] if prefix else k] = v
    # diffusers writes alpha = rank (scale 1); write the alpha actually trained with.
    kohya = {k: (torch.tensor(float(alpha)) if k.endswith(".alpha") else v.detach().float().cpu().contiguous())
             for k, v in kohya.items()}
    kohya_path = output_dir / kohya_lora_name(token)
    header = {"ss_network_module": "networks.lora", "ss_network_alpha": str(alpha), **dict(metadata or {}),
              "format": "pt", "sshs_model_hash": tensor_data_hash(kohya)}
    with atomic_path(kohya_path) as tmp:
        save_file(kohya, str(tmp), metadata=header)
    return [dest, kohya_path]
