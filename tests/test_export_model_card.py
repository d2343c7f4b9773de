"""Model cards: YAML written by huggingface_hub, hostile prompts round-trip, no local path as base_model."""

from __future__ import annotations

from pathlib import Path

import pytest

from lensa_for_all.config import TrainingConfig
from lensa_for_all.training.artifacts import model_card

HOSTILE = [
    "* ohwx person: the \"one\" #1",
    "ohwx person: 'quoted' & café — 東京, ünïcödé",
    "- ohwx person | [link](x) `tick` &anchor !tag %pct @at",
    "ohwx person\t# comment?: yes",
]


def _manifest(**extra: object) -> dict:
    return {"library_version": "0.0.0", "steps": 5, "final_loss": 0.12, "prediction_type": "epsilon",
            "kohya_weights": "ohwx_lora_kohya.safetensors", **extra}


@pytest.mark.parametrize("prompt", HOSTILE)
@pytest.mark.parametrize("method", ["lora", "full"])
def test_hostile_prompts_round_trip_through_modelcard_load(prompt: str, method: str, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    config = TrainingConfig.for_subject("person", method, instance_prompt=prompt,
                                        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5")
    path = tmp_path / "README.md"
    path.write_text(model_card(config, _manifest(checkpoint_weights="ohwx_checkpoint.safetensors")),
                    encoding="utf-8")
    card = ModelCard.load(path)
    assert card.data.instance_prompt == prompt
    assert card.data.widget == [{"text": prompt}]
    assert card.data.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert card.data.license == "creativeml-openrail-m" and card.data.library_name == "diffusers"
    assert ("lora" in card.data.tags) == (method == "lora")
    assert card.data.inference is True  # the widget can run: the base is on the Hub
    assert {"text-to-image", "diffusers", "dreambooth"} <= set(card.data.tags)
    if method == "full":
        assert "ohwx_checkpoint.safetensors" in card.text


def test_a_local_base_model_is_never_written_as_base_model(tiny_sd: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    config = TrainingConfig.for_subject("person", "lora", base_model=str(tiny_sd))
    path = tmp_path / "README.md"
    text = model_card(config, _manifest())
    path.write_text(text, encoding="utf-8")
    card = ModelCard.load(path)
    assert card.data.base_model is None and card.data.inference is False
    assert str(tiny_sd) not in text and tiny_sd.name not in text
    # a relative path that does not exist here (say, a folder on the training machine) is not a Hub id either
    other = TrainingConfig.for_subject("person", "lora", base_model="./models/sd15")
    assert "sd15" not in model_card(other, _manifest())
