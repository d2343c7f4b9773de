"""Builders for the generation tests: a LoRA model folder as the trainer writes it, and model tarballs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path


def make_lora_model(base: Path, out: Path, *, token: str = "zwx", subject_class: str = "dog",
                    seed: int = 0, resolution: int = 64) -> Path:
    """A LoRA folder (diffusers-format ``pytorch_lora_weights.safetensors`` + ``lensa_manifest.json``)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    if (out / "lensa_manifest.json").is_file():
        return out
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:  # gaussian init leaves B at zero; a trained LoRA has non-zero B
                p.normal_(0.0, 0.5)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=state, safe_serialization=True)
    (out / "lensa_manifest.json").write_text(json.dumps({
        "method": "lora", "base_model": str(base), "revision": None, "token": token,
        "subject_class": subject_class, "resolution": resolution,
    }))
    return out


def tar_folder(folder: Path, archive: Path, *, arcname: str = ".") -> Path:
    """``model.tar.gz`` the way SageMaker packs ``SM_MODEL_DIR`` (contents at the archive root)."""
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(folder.rglob("*")):
            tar.add(p, arcname=str(Path(arcname) / p.relative_to(folder)), recursive=False)
    return archive


def make_subject_photos(folder: Path, n: int = 4, size: int = 72) -> Path:
    """``n`` small photos of one 'subject' (a disc on a gradient), enough for a 2-step training run."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        ramp = np.linspace(0, 1, size)
        base = np.stack([np.outer(np.ones(size), ramp) * 200 + 20 * i, np.outer(ramp, np.ones(size)) * 180,
                         np.full((size, size), 90.0)], axis=2) + rng.normal(0, 8, (size, size, 3))
        img = Image.fromarray(np.clip(base, 0, 255).astype("uint8"))
        ImageDraw.Draw(img).ellipse((18, 18, 54, 54), fill=(220, 60 + 10 * i, 40))
        img.save(folder / f"photo-{i:02d}.png")
    return folder
