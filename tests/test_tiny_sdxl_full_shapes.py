"""make_tiny_sd(path, "full", family="sdxl"): SDXL 1.0 base's shapes, checked on the meta device (no weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # about 10 s: the meta-device build and two tokenizers


@pytest.fixture(scope="module")
def full_sdxl_on_meta(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, object, object]:
    import torch
    from transformers import CLIPTokenizer

    from lensa_for_all.testing import make_clip_tokenizer
    from lensa_for_all.testing.tiny_sd import sdxl_components

    folder = tmp_path_factory.mktemp("tokenizers")
    make_clip_tokenizer(folder / "tokenizer")
    make_clip_tokenizer(folder / "tokenizer_2", pad_token="!")
    with torch.device("meta"):
        return sdxl_components("full", CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                               CLIPTokenizer.from_pretrained(folder / "tokenizer_2"))


def _params(model: object) -> int:
    return sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]


def test_full_sdxl_has_sdxl_1_0_base_shapes(full_sdxl_on_meta: tuple[object, object, object, object]) -> None:
    unet, vae, te1, te2 = full_sdxl_on_meta
    assert all(p.is_meta for m in full_sdxl_on_meta for p in m.parameters())  # type: ignore[attr-defined]
    u = unet.config  # type: ignore[attr-defined]
    assert tuple(u.block_out_channels) == (320, 640, 1280) and tuple(u.transformer_layers_per_block) == (1, 2, 10)
    assert tuple(u.attention_head_dim) == (5, 10, 20) and u.cross_attention_dim == 2048 and u.sample_size == 128
    assert (u.addition_embed_type, u.addition_time_embed_dim, u.projection_class_embeddings_input_dim) == (
        "text_time", 256, 2816)
    v = vae.config  # type: ignore[attr-defined]
    assert tuple(v.block_out_channels) == (128, 256, 512, 512) and v.sample_size == 1024
    assert v.scaling_factor == 0.13025
    c1, c2 = te1.config, te2.config  # type: ignore[attr-defined]
    assert (c1.hidden_size, c1.num_hidden_layers, c1.num_attention_heads, c1.hidden_act) == (768, 12, 12, "quick_gelu")
    assert (c2.hidden_size, c2.num_hidden_layers, c2.num_attention_heads, c2.projection_dim) == (1280, 32, 20, 1280)
    assert type(te2).__name__ == "CLIPTextModelWithProjection" and c1.vocab_size == c2.vocab_size == 49408
    # the published parameter counts of SDXL 1.0 base's components
    assert _params(unet) == 2_567_463_684
    assert _params(te1) == 123_060_480
    assert _params(te2) == 694_659_840
    assert _params(vae) == 83_653_863


def test_full_sdxl_transformer_blocks_match_the_export_layout(
        full_sdxl_on_meta: tuple[object, object, object, object]) -> None:
    unet = full_sdxl_on_meta[0]
    blocks = [n for n, _ in unet.named_modules() if n.endswith(".attn2")]  # type: ignore[attr-defined]
    assert len(blocks) == 70  # as tests/test_sdxl_export_layout.py counts for SDXL 1.0


def test_full_sdxl_is_for_the_sdxl_family_only(tmp_path: Path) -> None:
    from lensa_for_all.testing import make_tiny_sd

    with pytest.raises(ValueError, match="size must be one of"):
        make_tiny_sd(tmp_path / "sd1", "full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size='tiny' or size='full'"):
        make_tiny_sd(tmp_path / "xl", "sd15", family="sdxl")
