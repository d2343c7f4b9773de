"""An SDXL LoRA folder exactly as training writes it, with random adapters that visibly change the image."""

from __future__ import annotations

from pathlib import Path


def make_sdxl_lora_export(base: Path, out: Path, *, token: str = "zwx", subject_class: str = "dog") -> Path:
    """UNet and both text encoders adapted (rank 4, alpha 8, so the alpha scaling is exercised), written by
    :func:`write_artifacts` for the SDXL family."""
    import torch

    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.families import SDXL
    from lensa_for_all.training.artifacts import write_artifacts
    from lensa_for_all.training.lora import add_lora
    from lensa_for_all.training.models import load_component

    if (out / "lensa_manifest.json").is_file():
        return out
    config = TrainingConfig.for_subject(subject_class, "lora", base_model=str(base), resolution=64, token=token,
                                        lora_rank=4, lora_alpha=8.0, train_text_encoder=True)
    torch.manual_seed(5)
    unet = load_component(str(base), "unet", family=SDXL)
    encoders = [load_component(str(base), name, family=SDXL) for name in SDXL.text_encoder_names]
    add_lora(unet, rank=4, alpha=8.0, dropout=0.0, target_modules=config.lora_target_modules)
    for encoder in encoders:
        add_lora(encoder, rank=4, alpha=8.0, dropout=0.0, target_modules=config.text_encoder_lora_target_modules)
    with torch.no_grad():
        for model in (unet, *encoders):
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.3)
    write_artifacts(out, config, unet, encoders[0], metrics={"steps": 6, "num_photos": 4, "final_loss": 0.1},
                    losses=[0.2, 0.1], prediction_type="epsilon", family=SDXL, text_encoder_2=encoders[1])
    return out
