"""The model-family seam and the tiny SDXL kit: detection, Hub layout, what each family loads and encodes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lensa_for_all.errors import ConfigError, ModelNotFoundError
from training_helpers import make_subject_photos, tiny_config


def test_the_family_comes_from_model_index_and_can_be_forced(tiny_sd: Path, tiny_sdxl: Path) -> None:
    from lensa_for_all.families import SD1, SDXL
    from lensa_for_all.training.models import check_base_model

    assert check_base_model(str(tiny_sd)) is SD1
    assert check_base_model(str(tiny_sdxl)) is SDXL
    assert check_base_model(str(tiny_sdxl), family="sdxl") is SDXL
    with pytest.raises(ModelNotFoundError, match=r"complete Stable Diffusion XL one \(missing \['text_encoder_2'"):
        check_base_model(str(tiny_sd), family="sdxl")
    with pytest.raises(ConfigError, match="model_family"):
        from lensa_for_all import TrainingConfig

        TrainingConfig(model_family="flux")


def test_an_unknown_pipeline_is_refused_naming_its_class(tmp_path: Path) -> None:
    from lensa_for_all.training.models import check_base_model

    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", "transformer": []}))
    with pytest.raises(ModelNotFoundError, match="FluxPipeline pipeline, not Stable Diffusion 1.x/2.x or"):
        check_base_model(str(tmp_path))


def test_tiny_sdxl_has_the_hub_layout_and_loads_as_sdxl(tiny_sdxl: Path) -> None:
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    for encoder, tokenizer in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        with safe_open(str(tiny_sdxl / encoder / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
        assert keys and all(k.startswith(("text_model.", "text_projection.")) for k in keys)
        assert sorted(p.name for p in (tiny_sdxl / tokenizer).iterdir()) == [
            "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    with safe_open(str(tiny_sdxl / "text_encoder_2" / "model.safetensors"), "pt") as f:
        assert "text_projection.weight" in set(f.keys())
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.pad_token == "<|endoftext|>"
    # the UNet's added embedding takes six size/crop numbers and the second encoder's pooled output
    cfg = pipe.unet.config
    assert cfg.projection_class_embeddings_input_dim == 6 * cfg.addition_time_embed_dim + \
        pipe.text_encoder_2.config.projection_dim
    assert cfg.cross_attention_dim == pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size


def test_sdxl_prompt_encoding_matches_the_pipeline(tiny_sdxl: Path) -> None:
    """Our encoding (penultimate states of both encoders, pooled projection) is what the pipeline computes."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    from lensa_for_all.families import SDXL

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    prompts = ["a photo of zwx dog", "a photo of dog"]
    with torch.no_grad():
        ids = SDXL.tokenize([pipe.tokenizer, pipe.tokenizer_2], prompts)
        ours = SDXL.encode([pipe.text_encoder, pipe.text_encoder_2], ids)
        theirs, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(ours.hidden, theirs) and torch.equal(ours.pooled, pooled)
    (args, kwargs) = SDXL.unet_conditioning(ours, 64)
    assert kwargs["added_cond_kwargs"]["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64]] * 2
    assert args[0] is ours.hidden


def test_fp16_training_of_sdxl_encodes_with_the_fp16_safe_vae(tiny_sdxl: Path, tiny_sd: Path, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    from lensa_for_all import TrainingConfig
    from lensa_for_all.families import SD1, SDXL
    from lensa_for_all.training.models import load_training_vae

    fixed = AutoencoderKL.from_pretrained(tiny_sdxl, subfolder="vae")
    fixed.register_to_config(force_upcast=False)
    fixed.save_pretrained(tmp_path / "fp16-fix")
    cfg = TrainingConfig(base_model=str(tiny_sdxl), fp16_vae=str(tmp_path / "fp16-fix"))
    assert load_training_vae(cfg, SDXL, "fp16").config.force_upcast is False
    assert load_training_vae(cfg, SDXL, "bf16").config.force_upcast is True  # the base's own
    assert load_training_vae(cfg.replace(fp16_vae=None), SDXL, "fp16").config.force_upcast is True
    sd1 = TrainingConfig(base_model=str(tiny_sd), fp16_vae=str(tmp_path / "fp16-fix"))
    assert load_training_vae(sd1, SD1, "fp16").config.latent_channels == 4  # SD 1.x keeps its VAE
    assert TrainingConfig().fp16_vae == "madebyollin/sdxl-vae-fp16-fix"
    with pytest.raises(ModelNotFoundError, match="fp16_vae"):
        load_training_vae(cfg.replace(fp16_vae=str(tmp_path / "missing")), SDXL, "fp16")


def test_a_full_sdxl_fine_tune_is_refused_with_the_reason(tiny_sdxl: Path, tmp_path: Path) -> None:
    from lensa_for_all.training.loop import train

    photos = make_subject_photos(tmp_path / "photos", n=3)
    with pytest.raises(ConfigError, match="does not fit a 24 GB GPU.*method='lora'"):
        train(tiny_config(tiny_sdxl, "full"), photos, tmp_path / "out")


def test_prompts_are_counted_with_both_sdxl_tokenizers(tiny_sdxl: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lensa_for_all import AvatarModel
    from lensa_for_all.prompts.tokens import TokenizerPair, token_counter_for

    with caplog.at_level(logging.WARNING):
        model = AvatarModel.load(tiny_sdxl)
    tok = model.runner.tokenizer
    assert isinstance(tok, TokenizerPair)
    count = token_counter_for(tok)
    text = "a photo of zwx dog, studio lighting"
    assert count(text) == len(model.pipeline.tokenizer_2(text)["input_ids"]) > 5
