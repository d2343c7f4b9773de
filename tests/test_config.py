"""TrainingConfig: presets, validation that names the field, JSON round trip, SageMaker hyper-parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensa_for_all.config import TrainingConfig
from lensa_for_all.errors import ConfigError, LensaError


def test_defaults_are_valid_and_fill_templates() -> None:
    cfg = TrainingConfig()
    assert cfg.instance_prompt_text == "a photo of ohwx person"
    assert cfg.class_prompt_text == "a photo of person"
    assert cfg.effective_lora_alpha == cfg.lora_rank
    assert cfg.effective_text_encoder_learning_rate == cfg.learning_rate


def test_people_preset_full() -> None:
    cfg = TrainingConfig.for_subject("person", "full")
    assert cfg.with_prior_preservation and cfg.train_text_encoder
    assert cfg.num_class_images == 200
    assert 1e-6 <= cfg.learning_rate <= 2e-6
    # about 100 steps per photo, clamped to 800..1600
    assert cfg.resolve_max_train_steps(4) == 800
    assert cfg.resolve_max_train_steps(10) == 1000
    assert cfg.resolve_max_train_steps(20) == 1600


def test_people_preset_lora_and_pet_and_object_presets() -> None:
    lora = TrainingConfig.for_subject("woman")
    assert lora.method == "lora" and lora.learning_rate == pytest.approx(1e-4)
    assert lora.with_prior_preservation
    dog = TrainingConfig.for_subject("dog")
    assert not dog.with_prior_preservation and not dog.train_text_encoder
    assert 200 <= dog.resolve_max_train_steps(1) <= dog.resolve_max_train_steps(50) <= 400
    mug = TrainingConfig.for_subject("mug", "full")
    assert TrainingConfig.subject_kind("mug") == "objects" and not mug.with_prior_preservation
    assert TrainingConfig.for_subject("dog", max_train_steps=123).resolve_max_train_steps(5) == 123


def test_preset_rejects_unknown_override() -> None:
    with pytest.raises(ConfigError, match="no_such_field"):
        TrainingConfig.for_subject("person", no_such_field=1)


@pytest.mark.parametrize(
    ("kwargs", "field", "why"),
    [
        ({"resolution": 500}, "resolution", "multiple of 8"),
        ({"instance_prompt": "a photo of a person"}, "instance_prompt", "identifier token"),
        ({"with_prior_preservation": True, "class_prompt": None}, "class_prompt", "needs a class prompt"),
        ({"with_prior_preservation": True, "class_prompt": "a photo of {token}"}, "class_prompt", "must not contain"),
        ({"learning_rate": -1e-4}, "learning_rate", "positive"),
        ({"text_encoder_learning_rate": 0.0}, "text_encoder_learning_rate", "positive"),
        ({"method": "dora"}, "method", "one of"),
        ({"mixed_precision": "fp8"}, "mixed_precision", "one of"),
        ({"report_to": "mlflow"}, "report_to", "one of"),
        ({"token": "two words"}, "token", "one ASCII word"),
        ({"train_batch_size": 0}, "train_batch_size", "> 0"),
        ({"instance_prompt": "a {style} photo of {token}"}, "instance_prompt", "unknown placeholder"),
        ({"validation_prompts": ("a portrait",)}, "validation_prompts", "token"),
        ({"early_stopping": True}, "early_stopping", "validation_steps"),
        ({"lora_dropout": 1.5}, "lora_dropout", r"\[0, 1\)"),
        ({"min_auto_steps": 900, "max_auto_steps": 800}, "min_auto_steps", "max_auto_steps"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict, field: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"TrainingConfig\.{field}: .*{why}") as info:
        TrainingConfig(**kwargs)
    assert isinstance(info.value, LensaError)


def test_frozen() -> None:
    import attrs

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        TrainingConfig().resolution = 256  # type: ignore[misc]


def test_json_round_trip_text_and_file(tmp_path: Path) -> None:
    cfg = TrainingConfig.for_subject("person", "full", validation_prompts=("{token} as an astronaut",),
                                     lora_target_modules=("to_q", "to_v"), revision="fp16")
    assert TrainingConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    again = TrainingConfig.from_json(path)
    assert again == cfg
    assert isinstance(again.validation_prompts, tuple)
    assert json.loads(path.read_text())["method"] == "full"


def test_from_json_names_unknown_keys(tmp_path: Path) -> None:
    data = TrainingConfig().to_dict() | {"learnin_rate": 1.0, "colour": "red"}
    with pytest.raises(ConfigError, match=r"\['colour', 'learnin_rate'\]"):
        TrainingConfig.from_json(json.dumps(data))
    with pytest.raises(ConfigError, match="does not exist"):
        TrainingConfig.from_json(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainingConfig.from_json("{not json")


def test_hyperparameters_from_sagemaker_strings() -> None:
    cfg = TrainingConfig().with_hyperparameters({
        "max_train_steps": "12", "train_text_encoder": "true", "learning_rate": "5e-5", "method": '"full"',
        "lora_target_modules": "to_q,to_v", "revision": "null", "snr_gamma": "5", "gradient_checkpointing": "False",
        "validation_prompts": '["{token} smiling"]',
    })
    assert cfg.max_train_steps == 12 and cfg.train_text_encoder is True
    assert cfg.learning_rate == pytest.approx(5e-5) and cfg.method == "full"
    assert cfg.lora_target_modules == ("to_q", "to_v") and cfg.revision is None
    assert cfg.snr_gamma == 5.0 and cfg.gradient_checkpointing is False
    assert cfg.validation_prompts == ("{token} smiling",)


def test_hyperparameters_errors() -> None:
    with pytest.raises(ConfigError, match="nope"):
        TrainingConfig().with_hyperparameters({"nope": "1"})
    with pytest.raises(ConfigError, match="max_train_steps: expects an integer"):
        TrainingConfig().with_hyperparameters({"max_train_steps": "many"})
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainingConfig().with_hyperparameters({"learning_rate": "-1"})
    with pytest.raises(ConfigError, match="true/false"):
        TrainingConfig().with_hyperparameters({"train_text_encoder": "maybe"})


def test_replace_validates_again() -> None:
    cfg = TrainingConfig()
    assert cfg.replace(resolution=256).resolution == 256
    with pytest.raises(ConfigError, match="resolution"):
        cfg.replace(resolution=255)


def test_example_runs() -> None:
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[1] / "examples" / "training_config.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, check=True).stdout
    assert "person/full: a photo of ohwx person" in out and "refused: TrainingConfig.resolution" in out
