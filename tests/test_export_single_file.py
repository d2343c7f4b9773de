"""The single-file checkpoint: original SD layout, checked with diffusers' own loader and conversion code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from export_helpers import make_sd15_layout, v2_text_encoder_state
from lensa_for_all.errors import ModelNotFoundError
from lensa_for_all.training.single_file import (
    original_state_dict,
    text_encoder_to_original,
    write_single_file,
)


@pytest.fixture(scope="module")
def sd15_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sd15_layout(tmp_path_factory.mktemp("models") / "sd15-layout")


def _component_state(folder: Path, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next((folder / name).glob("*.safetensors"))))


def _config(folder: Path, name: str) -> dict:
    return json.loads((folder / name / "config.json").read_text())


def test_from_single_file_reproduces_the_image_bit_for_bit(sd15_layout: Path, tmp_path: Path) -> None:
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    ckpt = write_single_file(sd15_layout, tmp_path / "model.safetensors", precision="fp32")
    ours = StableDiffusionPipeline.from_pretrained(sd15_layout, safety_checker=None)
    theirs = StableDiffusionPipeline.from_single_file(str(ckpt), config=str(sd15_layout), local_files_only=True,
                                                      safety_checker=None)

    def render(pipe: StableDiffusionPipeline) -> np.ndarray:
        pipe.set_progress_bar_config(disable=True)
        out = pipe("a photo of zwx person", num_inference_steps=3, height=64, width=64, output_type="np",
                   generator=torch.Generator("cpu").manual_seed(7))
        return np.asarray(out.images[0])

    a, b = render(ours), render(theirs)
    assert a.std() > 0.01  # a real image, not a constant
    assert np.abs(a - b).max() == 0.0


def test_keys_and_shapes_are_what_diffusers_converter_reads_back(sd15_layout: Path) -> None:
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES,
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    state, metadata = original_state_dict(sd15_layout, precision="fp32")
    # diffusers' own detection tables see an SD 1.x checkpoint with a CLIP text encoder
    assert infer_diffusers_model_type(state) == "v1"
    assert CHECKPOINT_KEY_NAMES["clip"] in state
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"
    assert metadata["modelspec.prediction_type"] == "epsilon"

    back = {
        "unet": convert_ldm_unet_checkpoint(state, _config(sd15_layout, "unet")),
        "vae": convert_ldm_vae_checkpoint(state, _config(sd15_layout, "vae")),
        "text_encoder": {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(state).items()},
    }
    total = 0
    for name, converted in back.items():
        original = _component_state(sd15_layout, name)
        assert set(converted) == set(original), name
        for key, value in original.items():
            assert tuple(converted[key].shape) == tuple(value.shape), key
            assert bool((converted[key] == value).all()), key
        total += len(original)
    assert len(state) == total  # every tensor in the file is one diffusers reads back, nothing extra


def test_fp16_by_default_and_written_atomically_beside_the_folder(sd15_layout: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors import safe_open

    folder = tmp_path / "my-model"
    shutil.copytree(sd15_layout, folder)
    ckpt = write_single_file(folder)
    assert ckpt == tmp_path / "my-model.safetensors"
    assert not list(tmp_path.glob(".*tmp*"))
    with safe_open(str(ckpt), "pt") as f:
        names = list(f.keys())
        assert {str(f.get_tensor(k).dtype) for k in names} == {"torch.float16"}
        assert f.metadata()["lensa.precision"] == "fp16"
        assert f.metadata()["modelspec.title"] == "my-model"
    fp32 = write_single_file(folder, tmp_path / "fp32.safetensors", precision="fp32")
    assert 1.9 < fp32.stat().st_size / ckpt.stat().st_size < 2.1


def test_v_prediction_is_recorded_where_loaders_look(tmp_path: Path) -> None:
    folder = make_sd15_layout(tmp_path / "v", prediction_type="v_prediction")
    state, metadata = original_state_dict(folder)
    assert "v_pred" in state  # ComfyUI's marker
    assert metadata["modelspec.prediction_type"] == "v"


def test_sd2_text_encoder_goes_to_the_open_clip_layout() -> None:
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    state, config = v2_text_encoder_state()
    converted = text_encoder_to_original(state, config)
    assert all(k.startswith("cond_stage_model.model.") for k in converted)
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in converted
    model = CLIPTextModel(CLIPTextConfig(**config))
    back = convert_open_clip_checkpoint(model, converted)
    back = {k.removeprefix("text_model."): v for k, v in back.items()}
    expected = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    assert set(back) == set(expected)
    for key, value in expected.items():
        assert bool((back[key] == value).all()), key


def test_a_folder_that_is_not_a_diffusers_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a complete diffusers"):
        write_single_file(tmp_path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_a_full_fine_tune_writes_the_checkpoint_beside_its_diffusers_folders(tiny_sd: Path, tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file

    from lensa_for_all.training.artifacts import write_artifacts
    from training_helpers import tiny_config

    config = tiny_config(tiny_sd, "full", token="qwv", train_text_encoder=False, with_prior_preservation=False)
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    out = tmp_path / "model"
    manifest = write_artifacts(out, config, unet, None, metrics={"steps": 4}, losses=[0.5],
                               prediction_type="epsilon")
    assert manifest["checkpoint_weights"] == "qwv_checkpoint.safetensors"
    data = (out / "qwv_checkpoint.safetensors").read_bytes()
    assert manifest["checkpoint_hash"] == {"sha256_10": hashlib.sha256(data).hexdigest()[:10], "size": len(data)}
    assert "qwv_checkpoint.safetensors" in manifest["files"]
    state = load_file(str(out / "qwv_checkpoint.safetensors"))
    back = convert_ldm_unet_checkpoint(state, dict(unet.config))
    assert set(back) == set(unet.state_dict())
    assert all(v.dtype.is_floating_point and v.itemsize == 2 for v in back.values())  # fp16 by default


def test_the_full_size_sd15_layout_converts_both_ways_on_the_meta_device() -> None:
    """SD 1.5's real shapes (320..1280 channels, 768-wide CLIP), without allocating 3.4 GB: meta tensors."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    from lensa_for_all.testing.tiny_sd import _SIZES
    from lensa_for_all.training.single_file import UNET_PREFIX, VAE_PREFIX, unet_to_original, vae_to_original

    unet_kw, vae_kw, _, _ = _SIZES["sd15"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **unet_kw)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **vae_kw)
    state = {UNET_PREFIX + k: v for k, v in unet_to_original(unet.state_dict(), unet.config).items()}
    state.update({VAE_PREFIX + k: v for k, v in vae_to_original(vae.state_dict(), vae.config).items()})
    assert infer_diffusers_model_type(state) == "v1"
    assert tuple(state["model.diffusion_model.input_blocks.1.1.proj_in.weight"].shape) == (320, 320, 1, 1)
    assert tuple(state["first_stage_model.decoder.mid.attn_1.q.weight"].shape) == (512, 512, 1, 1)
    for original, back in ((unet.state_dict(), convert_ldm_unet_checkpoint(state, unet.config)),
                           (vae.state_dict(), convert_ldm_vae_checkpoint(state, vae.config))):
        assert set(back) == set(original)
        assert all(tuple(back[k].shape) == tuple(v.shape) for k, v in original.items())
