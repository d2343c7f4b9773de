"""Builders for the export tests: an SD-1.5-layout pipeline at toy width, and an SD-2.x-shaped text encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_sd15_layout(path: Path, *, prediction_type: str = "epsilon") -> Path:
    """A random-weight pipeline with SD 1.5's exact layout and small channels.

    Same block types and counts as SD 1.5 (four UNet levels, cross-attention on the first three,
    two resnets per level, eight heads, 1x1-conv ``proj_in``; a four-level VAE with two resnets per
    level; a 12-layer quick-GELU CLIP), only narrower, so it builds in seconds and weighs ~20 MB.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lensa_for_all.testing import make_clip_tokenizer
    from lensa_for_all.testing.tiny_sd import SCHEDULER_CONFIG

    if (path / "model_index.json").is_file():
        return path
    make_clip_tokenizer(path / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(  # SD 1.5's default block types; only the widths shrink
        in_channels=4, out_channels=4, block_out_channels=(32, 64, 64, 64), layers_per_block=2, sample_size=8,
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 64, 64), layers_per_block=2,
        norm_num_groups=32, sample_size=64, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=1000, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_position_embeddings=77, hidden_size=32, intermediate_size=64,
        num_attention_heads=4, num_hidden_layers=12, projection_dim=32, hidden_act="quick_gelu"))
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=PNDMScheduler.from_config({**SCHEDULER_CONFIG, "prediction_type": prediction_type}),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def v2_text_encoder_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """An SD-2.x-shaped (OpenCLIP, GELU) text encoder's weights and config, at toy width."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(1)
    config = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                            num_hidden_layers=3, max_position_embeddings=77, hidden_act="gelu", projection_dim=32)
    model = CLIPTextModel(config)
    return {k: v.clone() for k, v in model.state_dict().items()}, config.to_dict()


def make_lora_export(base: Path, out: Path, *, token: str = "zwx", subject_class: str = "dog",
                     prediction_type: str = "epsilon") -> Path:
    """A LoRA folder exactly as training writes it (both weight formats, manifest, card), without training.

    The adapter's up-projections are random so the LoRA visibly changes the image.
    """
    import torch
    from diffusers import UNet2DConditionModel

    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.artifacts import write_artifacts
    from lensa_for_all.training.lora import add_lora

    if (out / "lensa_manifest.json").is_file():
        return out
    config = TrainingConfig.for_subject(subject_class, "lora", base_model=str(base), resolution=64, token=token,
                                        lora_rank=4, with_prior_preservation=False)
    torch.manual_seed(3)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    add_lora(unet, rank=config.lora_rank, alpha=config.effective_lora_alpha, dropout=0.0,
             target_modules=config.lora_target_modules)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    write_artifacts(out, config, unet, None, metrics={"steps": 7, "num_photos": 5, "final_loss": 0.1},
                    losses=[0.2, 0.1], prediction_type=prediction_type)
    return out
