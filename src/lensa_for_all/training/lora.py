"""LoRA adapters (peft) on the UNet and text encoder, and their export in two formats.

* diffusers format, ``pytorch_lora_weights.safetensors``: ``pipe.load_lora_weights(folder)`` loads it;
* kohya/A1111 format, ``<name>_kohya.safetensors``: AUTOMATIC1111, ComfyUI and SD.Next load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["add_lora", "lora_state_dicts", "save_lora", "DIFFUSERS_LORA_NAME", "kohya_lora_name"]

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
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    def grab(model: Any) -> dict[str, Any]:
        sd = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
        out = {}
        for k, v in sd.items():
            t = v.detach().float().cpu()
            if scale != 1.0 and (".up." in k or ".lora_B." in k):
                t = t * scale
            out[k] = t.contiguous()
        return out

    te = {_canonical_te_key(k): v for k, v in grab(text_encoder).items()} if text_encoder is not None else None
    return grab(unet), te


def _canonical_te_key(key: str) -> str:
    """CLIP text-encoder keys as the ecosystem writes them (``text_model.encoder...``).

    transformers 5 dropped the ``text_model`` level from ``CLIPTextModel``; LoRA files written with
    it would not load where transformers 4 runs (A1111, ComfyUI, the SageMaker containers).
    """
    if key.startswith(("encoder.", "embeddings.", "final_layer_norm.")):
        return "text_model." + key
    return key


def save_lora(output_dir: Path, unet: Any, text_encoder: Any | None, *, alpha: float, rank: int,
              token: str) -> list[Path]:
    """Write both formats into ``output_dir``; return the files written."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from ..atomic import atomic_path

    unet_sd, te_sd = lora_state_dicts(unet, text_encoder, scale=alpha / rank)
    output_dir.mkdir(parents=True, exist_ok=True)
    dest = output_dir / DIFFUSERS_LORA_NAME
    with atomic_path(dest) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp.parent, unet_lora_layers=unet_sd, text_encoder_lora_layers=te_sd, weight_name=tmp.name,
            safe_serialization=True,
        )

    peft_sd = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    if text_encoder is not None:
        peft_sd.update({f"text_encoder.{_canonical_te_key(k)}": v
                        for k, v in get_peft_model_state_dict(text_encoder).items()})
    # SD 1.x/2.x kohya files name the one text encoder ``lora_te_`` (``lora_te1_`` is SDXL's first).
    kohya = {k.replace("lora_te1_", "lora_te_", 1): v for k, v in convert_state_dict_to_kohya(peft_sd).items()}
    # diffusers writes alpha = rank (scale 1); write the alpha actually trained with.
    kohya = {k: (torch.tensor(float(alpha)) if k.endswith(".alpha") else v.detach().float().cpu().contiguous())
             for k, v in kohya.items()}
    kohya_path = output_dir / kohya_lora_name(token)
    with atomic_path(kohya_path) as tmp:
        save_file(kohya, str(tmp), metadata={"ss_network_module": "networks.lora", "ss_network_alpha": str(alpha),
                                             "format": "pt"})
    return [dest, kohya_path]
