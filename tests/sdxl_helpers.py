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


# SDXL 1.0 base's shapes (stabilityai/stable-diffusion-xl-base-1.0 unet/config.json and text encoder configs)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SDXL_TEXT_ENCODERS = (
    dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768),
    dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
         projection_dim=1280, hidden_act="gelu"),
)


def full_size_sdxl_with_lora(rank: int = 4) -> tuple[object, object, object]:
    """SDXL 1.0's UNet and two text encoders on the meta device (no memory), with real CPU LoRA adapters on
    them: what the export sees of a real run, for checking key names against the real block layout."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.lora import add_lora

    config = TrainingConfig()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
        te1 = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **SDXL_TEXT_ENCODERS[0]))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77,
                                                         **SDXL_TEXT_ENCODERS[1]))
    add_lora(unet, rank=rank, alpha=float(rank), dropout=0.0, target_modules=config.lora_target_modules)
    for te in (te1, te2):
        add_lora(te, rank=rank, alpha=float(rank), dropout=0.0, target_modules=config.text_encoder_lora_target_modules)
    torch.manual_seed(0)
    for model in (unet, te1, te2):
        for module in model.modules():
            for name in ("lora_A", "lora_B"):
                adapters = getattr(module, name, None)
                if isinstance(adapters, torch.nn.ModuleDict):
                    for key in list(adapters):
                        layer = adapters[key].to_empty(device="cpu")
                        torch.nn.init.normal_(layer.weight, std=0.02)
                        adapters[key] = layer
    return unet, te1, te2
