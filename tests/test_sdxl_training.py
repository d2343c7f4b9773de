"""DreamBooth LoRA on the tiny SDXL: both text encoders, prior preservation, min-SNR, offset noise, exact resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from lensa_for_all.training.progress import TrainingProgress
from training_helpers import make_subject_photos, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subject_photos(tmp_path_factory.mktemp("photos"), n=4)


def _config(base: Path, **overrides: Any) -> Any:
    settings: dict[str, Any] = dict(max_train_steps=4, snr_gamma=5.0, offset_noise=0.05, learning_rate=1e-3)
    settings.update(overrides)
    return tiny_config(base, "lora", **settings)


@pytest.fixture(scope="module")
def trained(tiny_sdxl: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from lensa_for_all.training.loop import train

    root = tmp_path_factory.mktemp("sdxl-run")
    cfg = _config(tiny_sdxl, validation_prompts=("a photo of {token} person smiling",), validation_steps=2,
                  validation_inference_steps=2)
    assert cfg.with_prior_preservation and cfg.train_text_encoder
    metrics = train(cfg, photos, root / "out", class_image_cache=root / "class-cache")
    return root / "out", metrics


def test_sdxl_lora_trains_both_encoders_with_class_images(trained: tuple[Path, dict[str, Any]]) -> None:
    from safetensors import safe_open

    out, metrics = trained
    assert metrics["steps"] == 4 and metrics["num_class_images"] == 2
    manifest = json.loads((out / "lensa_manifest.json").read_text())
    assert manifest["model_family"] == "sdxl" and manifest["lora_weights"] == "pytorch_lora_weights.safetensors"
    with safe_open(str(out / "pytorch_lora_weights.safetensors"), "pt") as f:
        groups = {k.split(".")[0] for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    assert groups == {"unet", "text_encoder", "text_encoder_2"}
    with safe_open(str(out / manifest["kohya_weights"]), "pt") as f:
        kohya_groups = {k.split("_")[1] for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
        meta = f.metadata()
    assert kohya_groups == {"unet", "te1", "te2"}
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["ss_network_train_unet_only"] == "False"
    assert len(list((out / "validation" / "step-000002").glob("*.png"))) == 1
    card = (out / "README.md").read_text()
    assert "StableDiffusionXLPipeline.from_pretrained" in card


def test_sdxl_at_low_resolution_warns_that_it_is_trained_for_1024(tiny_sdxl: Path, photos: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from lensa_for_all.training.loop import train

    with caplog.at_level(logging.WARNING, logger="lensa_for_all"):
        train(_config(tiny_sdxl, max_train_steps=1, with_prior_preservation=False, train_text_encoder=False),
              photos, tmp_path / "out")
    assert "Stable Diffusion XL is trained for 1024 px; at resolution=64" in caplog.text


def test_sdxl_resume_gives_identical_weights(tiny_sdxl: Path, photos: Path, tmp_path: Path) -> None:
    """Interrupted after a checkpoint, then resumed: the same LoRA bit for bit as a run that was never stopped."""
    from safetensors.torch import load_file

    from lensa_for_all.training.loop import train

    cfg = _config(tiny_sdxl, max_train_steps=4, checkpointing_steps=2, lora_dropout=0.1, num_class_images=2)
    cache = tmp_path / "class-cache"
    train(cfg, photos, tmp_path / "a" / "out", checkpoint_dir=tmp_path / "a" / "ck", class_image_cache=cache)

    def interrupt(p: TrainingProgress) -> None:
        if p.stage == "train" and p.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, photos, tmp_path / "b" / "out", checkpoint_dir=tmp_path / "b" / "ck", class_image_cache=cache,
              progress=interrupt)
    metrics = train(cfg, photos, tmp_path / "b" / "out", checkpoint_dir=tmp_path / "b" / "ck",
                    class_image_cache=cache)
    assert metrics["resumed_from"].endswith("checkpoint-000002")
    a = load_file(str(tmp_path / "a" / "out" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "out" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("text_encoder_2.") for k in a)
    assert all(a[k].equal(b[k]) for k in a)


def test_frozen_sdxl_encoders_are_encoded_once_and_the_unet_lora_learns(tiny_sdxl: Path, photos: Path,
                                                                         tmp_path: Path) -> None:
    """With the text encoders frozen, prompts are encoded once (pooled too) and the UNet LoRA still learns."""
    from safetensors.torch import load_file

    from lensa_for_all.training.loop import train

    cfg = _config(tiny_sdxl, max_train_steps=2, with_prior_preservation=False, train_text_encoder=False)
    metrics = train(cfg, photos, tmp_path / "out")
    weights = load_file(str(tmp_path / "out" / "pytorch_lora_weights.safetensors"))
    assert {k.split(".")[0] for k in weights} == {"unet"}
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k or ".up." in k)
    assert metrics["final_loss"] is not None
