"""Per-family presets, cost estimates and the SageMaker memory check."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lensa_for_all import TrainingConfig


def test_an_sdxl_base_gets_sdxl_settings_on_top_of_the_subject_preset(tiny_sdxl: Path, tiny_sd: Path) -> None:
    person = TrainingConfig.for_subject("person", base_model=str(tiny_sdxl))
    assert (person.resolution, person.gradient_checkpointing, person.learning_rate,
            person.text_encoder_learning_rate) == (1024, True, 1e-4, 5e-6)
    assert person.with_prior_preservation and person.train_text_encoder  # the subject's part is kept
    dog = TrainingConfig.for_subject("dog", model_family="sdxl")  # forced, base not at hand
    assert dog.resolution == 1024 and not dog.train_text_encoder
    assert TrainingConfig.for_subject("person", base_model=str(tiny_sdxl), resolution=768).resolution == 768
    # SD 1.x presets are untouched
    sd1 = TrainingConfig.for_subject("person", base_model=str(tiny_sd))
    assert (sd1.resolution, sd1.gradient_checkpointing, sd1.text_encoder_learning_rate) == (512, False, 5e-5)
    assert TrainingConfig.for_subject("person") == TrainingConfig.for_subject("person", model_family="auto")


def test_sdxl_costs_more_per_step_than_sd15(tiny_sdxl: Path) -> None:
    from lensa_for_all.backends.pricing import estimate_cost

    sd15 = TrainingConfig.for_subject("dog", max_train_steps=500)
    sdxl = TrainingConfig.for_subject("dog", base_model=str(tiny_sdxl), max_train_steps=500)
    a, b = estimate_cost(sd15, 5), estimate_cost(sdxl, 5)
    # 4x the pixels at 1024 px, 1.5x the UNet work per latent pixel: 6x the training time after the fixed overhead
    overhead = 420.0
    assert (b.seconds - overhead) == pytest.approx(6 * (a.seconds - overhead))
    assert b.usd > a.usd
    same_size = estimate_cost(sdxl.replace(resolution=512), 5)
    assert (same_size.seconds - overhead) == pytest.approx(1.5 * (a.seconds - overhead))


def test_sagemaker_warns_when_an_sdxl_lora_will_not_fit(tiny_sdxl: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lensa_for_all.backends.sagemaker import SageMakerBackend, _warn_if_short_of_gpu_memory

    sdxl = TrainingConfig.for_subject("dog", base_model=str(tiny_sdxl))
    assert SageMakerBackend(region="us-east-1").instance_type == "ml.g5.2xlarge"  # 24 GB: the default fits
    with caplog.at_level(logging.WARNING, logger="lensa_for_all"):
        _warn_if_short_of_gpu_memory(sdxl, "ml.g5.2xlarge")
        assert caplog.text == ""
        _warn_if_short_of_gpu_memory(sdxl, "ml.g4dn.xlarge")
        assert "Stable Diffusion XL LoRA needs about 24 GB" in caplog.text and "ml.g4dn.xlarge has 16 GB" in caplog.text
        caplog.clear()
        _warn_if_short_of_gpu_memory(sdxl.replace(gradient_checkpointing=False), "ml.g5.2xlarge")
        assert "only with gradient_checkpointing=True" in caplog.text
        caplog.clear()
        _warn_if_short_of_gpu_memory(TrainingConfig.for_subject("dog"), "ml.g4dn.xlarge")  # SD 1.5 fits 16 GB
        assert caplog.text == ""
