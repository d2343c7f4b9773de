"""``lensa-for-all train``: TOML or saved JSON config, the shared flags, and checks before training."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lensa_for_all import TrainingConfig
from lensa_for_all.cli.main import EXIT_ERROR, EXIT_USAGE, build_parser, main
from lensa_for_all.cli.train import build_settings
from pipeline_helpers import copy_sample_photos


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LENSA_CONFIG", "LENSA_BACKEND", "LENSA_CLASS", "LENSA_REGION", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    monkeypatch.chdir(tmp_path)


def _settings(*argv: str) -> tuple[TrainingConfig, object]:
    return build_settings(build_parser().parse_args(["train", "photos", "--out", "model", *argv]))


def test_toml_config_like_run_s(tmp_path: Path) -> None:
    (tmp_path / "my.toml").write_text('class = "puppy"\nsteps = 120\nbackend = "sagemaker"\n\n[training]\n'
                                      'learning_rate = 3e-4\nresolution = 256\n\n[sagemaker]\nspot = false\n')
    config, settings = _settings("--config", "my.toml", "--max-cost", "2.5", "--region", "eu-west-1")
    assert (config.subject_class, config.max_train_steps, config.learning_rate, config.resolution) == \
        ("puppy", 120, 3e-4, 256)
    assert not config.with_prior_preservation  # the pet preset under the file's values
    assert settings.backend == "sagemaker"  # type: ignore[attr-defined]
    assert settings.sagemaker == {"spot": False, "max_cost_usd": 2.5, "region": "eu-west-1"}  # type: ignore[attr-defined]
    # a flag beats the file
    config, _ = _settings("--config", "my.toml", "--steps", "40", "--class", "woman", "--set", "lora_rank=8")
    assert (config.subject_class, config.max_train_steps, config.lora_rank) == ("woman", 40, 8)
    assert config.with_prior_preservation  # the person preset


def test_saved_training_config_json_is_still_accepted(tmp_path: Path) -> None:
    saved = TrainingConfig.for_subject("cat", learning_rate=7e-5, lora_rank=12)
    saved.to_json(tmp_path / "training_config.json")
    config, _ = _settings("--config", "training_config.json", "--steps", "9")
    assert config.replace(max_train_steps=None) == saved and config.max_train_steps == 9


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--class", "persn"], EXIT_USAGE, "Did you mean person"),
    (["--set", "lora_rank"], EXIT_USAGE, "--set expects FIELD=VALUE"),
    (["--backend", "sagemaker"], EXIT_ERROR, "No AWS region is set"),
    (["--backend", "sagemaker", "--region", "us-east-1", "--max-cost", "0.01"], EXIT_ERROR,
     "over your limit of $0.01 (--max-cost"),
    (["--base-model", "nobody/nothing"], EXIT_ERROR, "not in the Hugging Face cache"),
])
def test_train_checks_before_training(argv: list[str], code: int, message: str, tiny_sd: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    photos = copy_sample_photos(tmp_path / "me", n=4)
    base = [] if "--base-model" in argv else ["--base-model", str(tiny_sd)]
    assert main(["train", str(photos), "--out", "model", *base, *argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "model").exists() and not (tmp_path / "model.work").exists()
