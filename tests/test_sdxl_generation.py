"""SDXL LoRAs at generation: both export formats load in diffusers to the same pixels, AvatarModel renders and
regenerates them with A1111 metadata, and a LoRA on another family's base is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export_helpers import make_lora_export
from lensa_for_all.errors import ModelNotFoundError
from sdxl_helpers import make_sdxl_lora_export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sdxl_lora(tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sdxl_lora_export(tiny_sdxl, tmp_path_factory.mktemp("lora") / "zwx-dog")


def _render(base: Path, lora: Path | None = None, weight_name: str | None = None) -> Any:
    import torch
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(str(lora), weight_name=weight_name)
        assert {"unet", "text_encoder", "text_encoder_2"} <= set(pipe.get_list_adapters())
    image = pipe("a photo of zwx dog", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(7)).images[0]
    return np.asarray(image)


def test_diffusers_converter_consumes_every_kohya_key(sdxl_lora: Path) -> None:
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers
    from safetensors.torch import load_file

    manifest = json.loads((sdxl_lora / "lensa_manifest.json").read_text())
    kohya = load_file(str(sdxl_lora / manifest["kohya_weights"]))
    assert {k.split("_")[1] for k in kohya} == {"unet", "te1", "te2"}
    remaining = dict(kohya)
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(remaining)  # raises on a key it cannot place
    assert not remaining  # it consumed all of them
    ours = load_file(str(sdxl_lora / "pytorch_lora_weights.safetensors"))
    assert len(converted) == len(ours)
    assert set(alphas.values()) == {8.0}


def test_kohya_and_diffusers_exports_render_the_same_pixels(tiny_sdxl: Path, sdxl_lora: Path) -> None:
    manifest = json.loads((sdxl_lora / "lensa_manifest.json").read_text())
    base = _render(tiny_sdxl)
    ours = _render(tiny_sdxl, sdxl_lora, "pytorch_lora_weights.safetensors")
    kohya = _render(tiny_sdxl, sdxl_lora, manifest["kohya_weights"])
    assert not np.array_equal(base, ours)  # the adapters change the image
    assert np.array_equal(ours, kohya)


def test_avatar_model_renders_an_sdxl_lora_and_regenerates_it_from_the_png(sdxl_lora: Path, tmp_path: Path) -> None:
    from PIL import Image

    from lensa_for_all import AvatarModel

    model = AvatarModel.load(sdxl_lora)
    assert type(model.pipeline).__name__ == "StableDiffusionXLPipeline" and model.is_lora
    assert model.default_size == (64, 64)
    pack = model.generate("a photo of zwx dog, studio lighting", 2, seed=11, num_inference_steps=2,
                          out_dir=tmp_path / "pack")
    pngs = sorted((tmp_path / "pack").glob("*.png"))
    assert len(pngs) == 2 and len(pack) == 2
    text = Image.open(pngs[0]).info["parameters"]
    assert "<lora:zwx_lora_kohya:1.0>" in text and 'Lora hashes: "zwx_lora_kohya: ' in text and "Seed: 11" in text
    again = model.regenerate(pngs[0])
    assert np.array_equal(np.asarray(again.image), np.asarray(Image.open(pngs[0]).convert("RGB")))
    off = model.generate("a photo of zwx dog, studio lighting", 1, seed=11, num_inference_steps=2, lora_scale=0.0)
    assert not np.array_equal(np.asarray(off[0].image), np.asarray(again.image))


def test_an_sdxl_lora_on_an_sd15_base_is_refused_naming_both(sdxl_lora: Path, tiny_sd: Path) -> None:
    from lensa_for_all import AvatarModel

    with pytest.raises(ModelNotFoundError, match=r"trained on a Stable Diffusion XL base, but .* is a Stable "
                                                 r"Diffusion 1.x/2.x model"):
        AvatarModel.load(sdxl_lora, base_model=str(tiny_sd))


def test_an_sd15_lora_on_an_sdxl_base_is_refused_naming_both(tiny_sd: Path, tiny_sdxl: Path, tmp_path: Path) -> None:
    from lensa_for_all import AvatarModel

    sd1_lora = make_lora_export(tiny_sd, tmp_path / "sd1-lora")
    assert json.loads((sd1_lora / "lensa_manifest.json").read_text())["model_family"] == "sd1"
    with pytest.raises(ModelNotFoundError, match=r"trained on a Stable Diffusion 1.x/2.x base, but .* is a Stable "
                                                 r"Diffusion XL model"):
        AvatarModel.load(sd1_lora, base_model=str(tiny_sdxl))


def test_an_sdxl_base_rendered_at_512_or_less_warns(tiny_sdxl: Path, sdxl_lora: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A base whose UNet is sized for 1024 px (sample size 128 latents x 8), loaded at the LoRA's 64 px."""
    import logging
    import shutil

    from lensa_for_all import AvatarModel

    base = tmp_path / "sdxl-1024"
    shutil.copytree(tiny_sdxl, base)
    config = json.loads((base / "unet" / "config.json").read_text())
    (base / "unet" / "config.json").write_text(json.dumps({**config, "sample_size": 512}))  # x2 VAE: 1024 px
    with caplog.at_level(logging.WARNING, logger="lensa_for_all"):
        AvatarModel.load(sdxl_lora, base_model=str(base))
    assert "is a Stable Diffusion XL model, trained for 1024 px; at 64x64" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lensa_for_all"):
        AvatarModel.load(sdxl_lora)  # the tiny base is sized for 64 px: nothing to say
    assert "trained for" not in caplog.text
