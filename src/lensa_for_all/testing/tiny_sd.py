"""Random-weight Stable Diffusion 1.x-layout pipelines and a locally generated CLIP tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from .bpe import CORPUS, bytes_to_unicode, train_bpe

__all__ = ["make_tiny_sd", "make_clip_tokenizer"]

Size = Literal["tiny", "small", "sd15", "full"]  # "full": family="sdxl" only

# name -> (unet kwargs, vae kwargs, text-encoder kwargs, default resolution)
_SIZES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]] = {
    # diffusers' own test dummies: two UNet levels, VAE x2 downsampling, 64 px.
    "tiny": (
        dict(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, cross_attention_dim=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            norm_num_groups=32,
        ),
        dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32, sample_size=64,
             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
        dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5),
        64,
    ),
    # SD-shaped at small scale: three UNet levels (two with cross-attention), VAE x8 downsampling.
    "small": (
        dict(
            block_out_channels=(32, 64, 128), layers_per_block=2, sample_size=16, cross_attention_dim=64,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=8, norm_num_groups=32,
        ),
        dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=32, sample_size=128,
             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
        dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=4),
        128,
    ),
    # The real SD 1.5 shapes with random weights: for GPU benchmarks at 512 px (3.4 GB in fp32).
    "sd15": (
        dict(
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64,
            cross_attention_dim=768, attention_head_dim=8,
        ),
        dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
        dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        512,
    ),
}

SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "trained_betas": None,
}


def make_clip_tokenizer(path: str | os.PathLike[str], *, num_merges: int = 400, pad_token: str = "<|endoftext|>"
                        ) -> Path:
    """Write a CLIP BPE tokenizer (``vocab.json``, ``merges.txt``) learnt from a small prompt corpus.

    Same format and special tokens as ``openai/clip-vit-large-patch14``, so ``CLIPTokenizer`` loads it
    and counts tokens the way the real one does (byte-level symbols, ``</w>`` word ends, 77 max).
    SDXL's second tokenizer pads with ``"!"`` (``pad_token="!"``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    b2u = bytes_to_unicode()
    symbols = list(b2u.values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges = train_bpe(CORPUS, num_merges, end_of_word="</w>")
    vocab_list += ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
    )
    (path / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad_token,
    }))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": pad_token,
    }))
    return path


def _as_hub_layout(folder: Path, text_encoders: tuple[tuple[str, str, str], ...] = (
        ("text_encoder", "tokenizer", "<|endoftext|>"),)) -> None:
    """Rewrite what transformers 5's ``save_pretrained`` changed, so the folder has the layout of the Hub's SD
    1.5: CLIP weights keyed ``text_model.*``, and a tokenizer of ``vocab.json`` + ``merges.txt`` with the two
    JSON files, no ``tokenizer.json``. Tests then catch code that only works with the transformers-5 layout."""
    import shutil

    from safetensors.torch import load_file, save_file

    from ..training.pipeline_folder import canonical_text_encoder_state

    for encoder, tokenizer, pad in text_encoders:
        weights = folder / encoder / "model.safetensors"
        save_file(canonical_text_encoder_state(load_file(str(weights))), str(weights), metadata={"format": "pt"})
        shutil.rmtree(folder / tokenizer)
        make_clip_tokenizer(folder / tokenizer, pad_token=pad)


def _publish(tmp: Path, path: Path, description: dict[str, Any]) -> Path:
    """Describe the built folder in ``lensa_testing.json``, then move it into place (replacing a stale one)."""
    import shutil

    (tmp / "lensa_testing.json").write_text(json.dumps({
        **description, "note": "random weights from lensa_for_all.testing; images are noise-like by design",
    }, indent=2))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def make_tiny_sd(
    path: str | os.PathLike[str],
    size: Size = "tiny",
    *,
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    seed: int = 0,
    family: Literal["sd1", "sdxl"] = "sd1",
) -> Path:
    """Build a random-weight Stable Diffusion 1.x-layout pipeline folder at ``path`` and return it.

    ``StableDiffusionPipeline.from_pretrained(path)`` loads it; the safety checker is absent. With
    ``prediction_type="v_prediction"`` it stands in for an SD 2.x-style model. Building is
    deterministic for a given ``seed``. An existing complete folder is reused.

    ``family="sdxl"`` builds an SDXL instead: a UNet with SDXL's ``text_time`` added conditioning, two CLIP
    text encoders (the second with a projection) and two locally built tokenizers;
    ``StableDiffusionXLPipeline.from_pretrained(path)`` loads it. ``size="tiny"`` (64 px) is diffusers' test
    dummy; ``size="full"`` has SDXL 1.0 base's shapes for GPU benchmarks at 1024 px (about 3.5 billion
    parameters, 7 GB of fp16 safetensors, built on the GPU when there is one: see :func:`sdxl_components`).
    """
    if family == "sdxl":
        return _make_tiny_sdxl(Path(path), size=size, prediction_type=prediction_type, seed=seed)
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, not {size!r}")
    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    unet_kw, vae_kw, te_kw, resolution = _SIZES[size]
    tmp = path.with_name(f".{path.name}.building")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    make_clip_tokenizer(tmp / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(tmp / "tokenizer")

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **unet_kw)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **vae_kw)
    te_cfg = CLIPTextConfig(
        vocab_size=max(len(tokenizer), 1000 if size != "sd15" else 49408),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_position_embeddings=77, layer_norm_eps=1e-5,
        projection_dim=te_kw["hidden_size"], **te_kw,
    )
    text_encoder = CLIPTextModel(te_cfg)
    scheduler = PNDMScheduler.from_config({**SCHEDULER_CONFIG, "prediction_type": prediction_type})
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]
    _as_hub_layout(tmp)
    return _publish(tmp, path, {"size": size, "resolution": resolution, "prediction_type": prediction_type,
                                "seed": seed})


# SDXL 1.0 base's shapes (stabilityai/stable-diffusion-xl-base-1.0: unet/, vae/, text_encoder{,_2}/ configs).
SDXL_FULL_UNET: dict[str, Any] = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # six size/crop numbers x 256 + the 1280 pooled text embedding
)
SDXL_FULL_VAE: dict[str, Any] = dict(
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, in_channels=3, out_channels=3, latent_channels=4,
    sample_size=1024, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32, scaling_factor=0.13025, force_upcast=True,
)
SDXL_FULL_TEXT_ENCODERS: tuple[dict[str, Any], dict[str, Any]] = (
    # CLIP ViT-L/14's text tower, then OpenCLIP ViT-bigG/14's (with its 1280-wide projection)
    dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768,
         hidden_act="quick_gelu", vocab_size=49408),
    dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
         projection_dim=1280, hidden_act="gelu", vocab_size=49408),
)
SDXL_FULL_RESOLUTION = 1024


def sdxl_components(size: str, tokenizer: Any, tokenizer_2: Any) -> tuple[Any, Any, Any, Any]:
    """SDXL's UNet, VAE and two text encoders at ``size`` ("tiny" or "full"), random weights, built under the
    caller's default device (``with torch.device("meta")`` builds the full shapes without any memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if size not in ("tiny", "full"):
        raise ValueError(f"family='sdxl' is built at size='tiny' or size='full', not {size!r}")

    def te_config(tok: Any, shape: dict[str, Any]) -> Any:
        return CLIPTextConfig(
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            max_position_embeddings=77, layer_norm_eps=1e-5, **shape,
        )

    if size == "full":
        unet = UNet2DConditionModel(**SDXL_FULL_UNET)
        vae = AutoencoderKL(**SDXL_FULL_VAE)
        te1_shape, te2_shape = SDXL_FULL_TEXT_ENCODERS
    else:  # the tiny SDXL of diffusers' own pipeline tests
        hidden, time_dim = 32, 8
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * time_dim + hidden,  # six size/crop numbers + pooled text
            cross_attention_dim=2 * hidden, norm_num_groups=1,
        )
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=32, scaling_factor=0.13025,
        )
        te1_shape = te2_shape = dict(hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
                                     num_hidden_layers=5, projection_dim=hidden, hidden_act="gelu")
        te1_shape = {**te1_shape, "vocab_size": max(len(tokenizer), 1000)}
        te2_shape = {**te2_shape, "vocab_size": max(len(tokenizer_2), 1000)}
    return (unet, vae, CLIPTextModel(te_config(tokenizer, te1_shape)),
            CLIPTextModelWithProjection(te_config(tokenizer_2, te2_shape)))


def _make_tiny_sdxl(path: Path, *, size: str, prediction_type: str, seed: int) -> Path:
    """An SDXL pipeline folder with Hub-layout encoders and tokenizers: diffusers' test-sized one ("tiny", 64 px)
    or SDXL 1.0 base's shapes ("full", 1024 px; about 3.5 billion parameters, 7 GB as fp16 safetensors).

    "full" is built on the GPU when there is one (a few seconds there; minutes of random initialisation on a
    CPU) and saved in fp16, as the Hub's fp16 variant of SDXL is: half the disk and the write time of fp32.
    """
    import shutil

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    if size not in ("tiny", "full"):
        raise ValueError(f"family='sdxl' is built at size='tiny' or size='full', not {size!r}")
    if (path / "model_index.json").is_file():
        return path
    tmp = path.with_name(f".{path.name}.building")
    if tmp.exists():
        shutil.rmtree(tmp)
    make_clip_tokenizer(tmp / "tokenizer")
    make_clip_tokenizer(tmp / "tokenizer_2", pad_token="!")
    tokenizer = CLIPTokenizer.from_pretrained(tmp / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(tmp / "tokenizer_2")
    full = size == "full"
    device = torch.device("cuda" if full and torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    with device:
        unet, vae, te1, te2 = sdxl_components(size, tokenizer, tokenizer_2)
    if full:
        for model in (unet, vae, te1, te2):
            model.to(torch.float16)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading", interpolation_type="linear", prediction_type=prediction_type,
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=te1, tokenizer=tokenizer, text_encoder_2=te2, tokenizer_2=tokenizer_2,
        scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)  # type: ignore[attr-defined]
    del pipe, unet, vae, te1, te2
    _as_hub_layout(tmp, (("text_encoder", "tokenizer", "<|endoftext|>"), ("text_encoder_2", "tokenizer_2", "!")))
    resolution = SDXL_FULL_RESOLUTION if full else 64
    return _publish(tmp, path, {"family": "sdxl", "size": size, "resolution": resolution,
                                "prediction_type": prediction_type, "seed": seed,
                                **({"dtype": "float16", "built_on": device.type} if full else {})})
