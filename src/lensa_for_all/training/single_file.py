"""A diffusers Stable Diffusion folder as one ``.safetensors`` file in the original (CompVis/LDM) layout.

That single file is what AUTOMATIC1111's model dropdown, ComfyUI's ``CheckpointLoaderSimple`` and
``StableDiffusionPipeline.from_single_file`` load. The key layout, per component:

* UNet under ``model.diffusion_model.``: ``input_blocks.N`` / ``middle_block.N`` / ``output_blocks.N``
  with ``(layers_per_block + 1)`` slots per level (resnets ``in_layers/out_layers/emb_layers``,
  attention as ``N.1``, down/up-samplers as ``N.0.op`` / ``N.{1,2}.conv``);
* VAE under ``first_stage_model.``: ``encoder.down.I.block.J``, ``decoder.up.I`` counted from the bottom,
  ``mid.block_1/attn_1/block_2`` with the attention projections as 1x1 convolutions;
* text encoder: SD 1.x CLIP under ``cond_stage_model.transformer.text_model.``; SD 2.x OpenCLIP
  (``gelu`` activation) under ``cond_stage_model.model.`` with fused ``attn.in_proj_*``.

v-prediction is recorded twice, as loaders look in different places: a ``v_pred`` marker tensor
(ComfyUI) and the ``modelspec.prediction_type`` metadata (the Stability model-spec convention).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ..atomic import atomic_path
from ..digests import file_sha256
from ..errors import ModelNotFoundError
from .pipeline_folder import canonical_text_encoder_state

__all__ = ["SINGLE_FILE_SUFFIX", "single_file_name", "a1111_model_hash", "original_state_dict", "unet_to_original",
           "vae_to_original", "text_encoder_to_original", "write_single_file", "is_v2_text_encoder"]

SINGLE_FILE_SUFFIX = ".safetensors"
Precision = Literal["fp16", "fp32"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
V_PRED_MARKER = "v_pred"


def a1111_model_hash(path: str | os.PathLike[str]) -> str:
    """AUTOMATIC1111's ``Model hash`` of a checkpoint: the first 10 hex digits of the file's SHA-256."""
    return file_sha256(path)[:10]


def single_file_name(folder_name: str) -> str:
    """The checkpoint's file name for a model folder: ``<folder>.safetensors``."""
    return f"{folder_name}{SINGLE_FILE_SUFFIX}"


# -- UNet -------------------------------------------------------------------------------------------
_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_RESNET_PARTS = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}


def _unet_resnet(rest: str) -> str:
    for new, old in _RESNET_PARTS.items():
        if rest.startswith(new):
            return old + rest[len(new):]
    raise KeyError(rest)


def unet_to_original(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """UNet weights from diffusers names to LDM names (without the ``model.diffusion_model.`` prefix)."""
    slots = int(config["layers_per_block"]) + 1
    up_has_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    out: dict[str, Any] = {}
    for key, value in state.items():
        out[_unet_key(key, slots, up_has_attn)] = value
    return out


def _unet_key(key: str, slots: int, up_has_attn: list[bool]) -> str:
    for new, old in _UNET_FIXED.items():
        if key.startswith(new):
            return old + key[len(new):]
    parts = key.split(".")
    if parts[0] == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.L.downsamplers.0.conv.X -> input_blocks.N.0.op.X
            return f"input_blocks.{slots * (level + 1)}.0.op." + ".".join(parts[5:])
        j = int(parts[3])
        block = f"input_blocks.{slots * level + j + 1}"
        rest = ".".join(parts[4:])
        return f"{block}.0.{_unet_resnet(rest)}" if kind == "resnets" else f"{block}.1.{rest}"
    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * j}.{_unet_resnet(rest)}"
    if parts[0] == "up_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":  # the level's last slot, after its attention when it has one
            pos = 2 if up_has_attn[level] else 1
            return f"output_blocks.{slots * level + slots - 1}.{pos}.conv." + ".".join(parts[5:])
        j = int(parts[3])
        block = f"output_blocks.{slots * level + j}"
        rest = ".".join(parts[4:])
        return f"{block}.0.{_unet_resnet(rest)}" if kind == "resnets" else f"{block}.1.{rest}"
    raise KeyError(f"UNet key {key!r} has no place in the original Stable Diffusion layout")


# -- VAE --------------------------------------------------------------------------------------------
_VAE_ATTN_PARTS = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def vae_to_original(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """VAE weights from diffusers names to LDM names (without ``first_stage_model.``)."""
    levels = len(config["up_block_types"])
    out: dict[str, Any] = {}
    for key, value in state.items():
        new_key = _vae_key(key, levels)
        if ".mid.attn_1." in new_key and new_key.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)  # LDM's attention projections are 1x1 convolutions
        out[new_key] = value
    return out


def _vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut.", "nin_shortcut.", 1) if rest.startswith("conv_shortcut.") else rest


def _vae_key(key: str, levels: int) -> str:
    parts = key.split(".")
    side = parts[0]
    if side in ("quant_conv", "post_quant_conv"):
        return key
    if side not in ("encoder", "decoder"):
        raise KeyError(f"VAE key {key!r} has no place in the original Stable Diffusion layout")
    what = parts[1]
    if what in ("conv_in", "conv_out"):
        return key
    if what == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(parts[2:])
    if what == "mid_block":
        kind, j, rest = parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "resnets":
            return f"{side}.mid.block_{j + 1}.{_vae_resnet(rest)}"
        for new, old in _VAE_ATTN_PARTS.items():
            if rest.startswith(new):
                return f"{side}.mid.attn_1.{old}{rest[len(new):]}"
        raise KeyError(key)
    if what in ("down_blocks", "up_blocks"):
        i, kind = int(parts[2]), parts[3]
        name, level = ("down", i) if what == "down_blocks" else ("up", levels - 1 - i)
        if kind in ("downsamplers", "upsamplers"):  # X_blocks.I.Xsamplers.0.conv.P
            sampler = "downsample" if kind == "downsamplers" else "upsample"
            return f"{side}.{name}.{level}.{sampler}.conv." + ".".join(parts[6:])
        j, rest = int(parts[4]), ".".join(parts[5:])
        return f"{side}.{name}.{level}.block.{j}.{_vae_resnet(rest)}"
    raise KeyError(f"VAE key {key!r} has no place in the original Stable Diffusion layout")


# -- text encoder -----------------------------------------------------------------------------------
def is_v2_text_encoder(config: Mapping[str, Any]) -> bool:
    """SD 2.x's OpenCLIP text encoder uses ``gelu``; SD 1.x's OpenAI CLIP ``quick_gelu``."""
    return str(config.get("hidden_act", "quick_gelu")) == "gelu"


def text_encoder_to_original(state: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Text-encoder weights with their full original-layout keys (SD 1.x CLIP or SD 2.x OpenCLIP)."""
    state = canonical_text_encoder_state(state)  # transformers 5 saves CLIP without the ``text_model.`` level
    if not is_v2_text_encoder(config):
        return {CLIP_PREFIX + k: v for k, v in state.items() if not k.endswith("position_ids")}
    return {OPEN_CLIP_PREFIX + k: v for k, v in _open_clip(state).items()}


_OPEN_CLIP_LAYER = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}


def _open_clip(state: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    fused: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in state.items():
        if key == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("text_model.final_layer_norm."):
            out["ln_final." + key.rsplit(".", 1)[1]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key.startswith("text_model.encoder.layers."):
            parts = key.split(".")
            layer, rest = int(parts[3]), ".".join(parts[4:])
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                fused.setdefault((layer, parts[-1]), {})[rest.split(".")[1]] = value
                continue
            for new, old in _OPEN_CLIP_LAYER.items():
                if rest.startswith(new):
                    out[f"transformer.resblocks.{layer}.{old}{rest[len(new):]}"] = value
                    break
            else:
                raise KeyError(f"text-encoder key {key!r} has no place in the OpenCLIP layout")
        elif not key.endswith("position_ids"):
            raise KeyError(f"text-encoder key {key!r} has no place in the OpenCLIP layout")
    for (layer, kind), qkv in fused.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
            [qkv["q_proj"], qkv["k_proj"], qkv["v_proj"]], dim=0)
    return out


# -- the whole model --------------------------------------------------------------------------------
def _read_component(folder: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    sub = folder / name
    config_file = sub / "config.json"
    files = sorted(p for p in sub.glob("*.safetensors") if ".fp16." not in p.name) if sub.is_dir() else []
    if not config_file.is_file() or not files:
        raise ModelNotFoundError(
            f"{folder} has no {name}/config.json and {name}/*.safetensors; it is not a complete diffusers "
            "Stable Diffusion folder (a full fine-tune written by `lensa-for-all train --method full`)."
        )
    state: dict[str, Any] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state, json.loads(config_file.read_text(encoding="utf-8"))


def _prediction_type(folder: Path) -> str:
    file = folder / "scheduler" / "scheduler_config.json"
    if not file.is_file():
        return "epsilon"
    return str(json.loads(file.read_text(encoding="utf-8")).get("prediction_type", "epsilon"))


def original_state_dict(model_dir: str | os.PathLike[str], *, precision: Precision = "fp16"
                        ) -> tuple[dict[str, Any], dict[str, str]]:
    """The folder's UNet, VAE and text encoder as one original-layout state dict, and its metadata."""
    import torch

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be 'fp16' or 'fp32', not {precision!r}")
    folder = Path(model_dir)
    unet, unet_cfg = _read_component(folder, "unet")
    vae, vae_cfg = _read_component(folder, "vae")
    te, te_cfg = _read_component(folder, "text_encoder")
    state: dict[str, Any] = {UNET_PREFIX + k: v for k, v in unet_to_original(unet, unet_cfg).items()}
    state.update({VAE_PREFIX + k: v for k, v in vae_to_original(vae, vae_cfg).items()})
    state.update(text_encoder_to_original(te, te_cfg))
    dtype = torch.float16 if precision == "fp16" else torch.float32
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    prediction = _prediction_type(folder)
    v2 = is_v2_text_encoder(te_cfg)
    if prediction == "v_prediction":
        state[V_PRED_MARKER] = torch.tensor([])
    resolution = int(unet_cfg.get("sample_size", 64)) * 2 ** (len(vae_cfg.get("block_out_channels", [0] * 4)) - 1)
    architecture = "stable-diffusion-v2" if v2 else "stable-diffusion-v1"
    if v2 and prediction == "v_prediction":
        architecture += "-768-v"
    metadata = {
        "format": "pt",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.implementation": "https://github.com/Stability-AI/stablediffusion" if v2
        else "https://github.com/CompVis/stable-diffusion",
        "modelspec.title": folder.name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.prediction_type": "v" if prediction == "v_prediction" else "epsilon",
        "lensa.precision": precision,
    }
    return state, metadata


def write_single_file(model_dir: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None, *,
                      precision: Precision = "fp16", title: str | None = None) -> Path:
    """Write ``model_dir`` (a diffusers SD folder) as one original-layout ``.safetensors`` file, atomically.

    ``dest`` defaults to ``<folder>.safetensors`` beside the folder. fp16 halves the file (2 GB for
    SD 1.5) and is what A1111 and ComfyUI run anyway; ``precision="fp32"`` keeps the trained bits.
    """
    from safetensors.torch import save_file

    folder = Path(model_dir)
    state, metadata = original_state_dict(folder, precision=precision)
    if title:
        metadata["modelspec.title"] = title
    target = Path(dest) if dest is not None else folder.parent / single_file_name(folder.name)
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return target
