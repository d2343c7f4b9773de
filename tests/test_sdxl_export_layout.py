"""The LoRA exports on SDXL 1.0's real block layout (UNet and both text encoders on the meta device, real LoRA
adapters): every module is named, diffusers' kohya converter consumes every key and lands on the same modules and
weights as our diffusers file."""

from __future__ import annotations

from typing import Any

import pytest

from sdxl_helpers import full_size_sdxl_with_lora

pytestmark = pytest.mark.slow

RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    from lensa_for_all.families import SDXL
    from lensa_for_all.training.lora import save_lora

    unet, te1, te2 = full_size_sdxl_with_lora(RANK)
    diffusers_file, kohya_file = save_lora(tmp_path_factory.mktemp("full-size"), unet, te1, alpha=ALPHA, rank=RANK,
                                           token="zwx", family=SDXL, text_encoder_2=te2)
    return load_file(str(diffusers_file)), load_file(str(kohya_file))


def _peft(state: dict[str, Any]) -> dict[str, Any]:
    """Either file's weights as diffusers hands them to peft when loading (per component)."""
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    out: dict[str, Any] = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        sub = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
        peft = convert_unet_state_dict_to_peft(sub) if part == "unet" else convert_state_dict_to_peft(
            convert_state_dict_to_diffusers(sub))
        out.update({f"{part}.{k}": v for k, v in peft.items()})
    return out


def test_every_attention_projection_of_sdxl_is_exported(exports: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, kohya = exports
    modules = {k.split(".")[0] for k in kohya}
    by_part = {p: sum(m.startswith(f"lora_{p}_") for m in modules) for p in ("unet", "te1", "te2")}
    # 70 transformer blocks x (self + cross attention) x (q, k, v, out); 12 and 32 CLIP layers x 4 projections
    assert by_part == {"unet": 70 * 2 * 4, "te1": 12 * 4, "te2": 32 * 4}
    assert len(kohya) == 3 * len(modules)  # lora_down, lora_up, alpha for each
    assert "lora_unet_down_blocks_2_attentions_1_transformer_blocks_9_attn2_to_k" in modules
    assert "lora_te2_text_model_encoder_layers_31_self_attn_out_proj" in modules
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {ALPHA}


def test_diffusers_converter_consumes_the_full_size_kohya_file_onto_our_modules_and_weights(
        exports: tuple[dict[str, Any], dict[str, Any]]) -> None:
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    ours, kohya = exports
    remaining = dict(kohya)
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(remaining)  # raises on a key it cannot place
    assert not remaining
    theirs, mine = _peft(converted), _peft(ours)
    assert theirs.keys() == mine.keys() and len(mine) == 2 * (560 + 48 + 128)
    # our diffusers file bakes alpha / rank into the up-projections; kohya's carries alpha beside them
    for key, value in mine.items():
        expected = theirs[key] * (ALPHA / RANK) if ".lora_B." in key else theirs[key]
        assert value.equal(expected), key
