"""Settings: TOML file < LENSA_* environment variables < flags; which file is read; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lensa_for_all.errors import ConfigError
from lensa_for_all.pipeline.settings import find_config_file, load_settings, user_config_file

CONFIG = """
backend = "sagemaker"
class = "dog"
method = "full"
base_model = "from-file"
steps = 300
num_images = 12
styles = ["fantasy", "headshot"]
out = "file-out"

[training]
learning_rate = 5e-5

[sagemaker]
instance_type = "ml.g5.xlarge"
max_cost_usd = 2.5

[generation]
num_inference_steps = 20
scheduler = "euler_a"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "my.toml"
    path.write_text(CONFIG)
    return path


def test_file_then_env_then_flags(config_file: Path, tmp_path: Path) -> None:
    env = {"LENSA_BASE_MODEL": "from-env", "LENSA_OUT": "env-out", "LENSA_NUM_IMAGES": "7",
           "LENSA_MAX_COST_USD": "4", "LENSA_SPOT": "false", "LENSA_STYLES": "anime, cyberpunk"}
    s = load_settings(config_file, env=env, cwd=tmp_path, flags={"out": "flag-out", "steps": None, "method": None})
    # file values where nothing overrides them
    assert (s.backend, s.subject_class, s.method, s.steps) == ("sagemaker", "dog", "full", 300)
    assert s.training == {"learning_rate": 5e-5} and s.generation["scheduler"] == "euler_a"
    # env over file
    assert s.base_model == "from-env" and s.num_images == 7 and s.styles == ("anime", "cyberpunk")
    assert s.sagemaker == {"instance_type": "ml.g5.xlarge", "max_cost_usd": 4.0, "spot": False}
    # flags over env; a None flag sets nothing
    assert s.out == "flag-out"
    assert s.sources["out"] == "flag" and s.sources["base_model"] == "env:LENSA_BASE_MODEL"
    assert s.sources["steps"] == str(config_file) and s.config_file == config_file
    # and with nothing at all: the defaults
    bare = load_settings(env={}, cwd=tmp_path)
    assert (bare.backend, bare.subject_class, bare.method, bare.num_images, bare.out) == \
        ("local", "person", "lora", 40, None) and bare.config_file is None


def test_which_file_is_read(config_file: Path, tmp_path: Path) -> None:
    cwd, home = tmp_path / "project", tmp_path / "xdg"
    cwd.mkdir()
    user = user_config_file({"XDG_CONFIG_HOME": str(home)})
    assert user == home / "lensa-for-all" / "config.toml"
    env = {"XDG_CONFIG_HOME": str(home)}
    assert find_config_file(env=env, cwd=cwd) is None
    user.parent.mkdir(parents=True)
    user.write_text('num_images = 3\n')
    assert find_config_file(env=env, cwd=cwd) == user
    (cwd / "lensa.toml").write_text('num_images = 4\n')
    assert load_settings(env=env, cwd=cwd).num_images == 4  # ./lensa.toml before the user file
    assert load_settings(env={**env, "LENSA_CONFIG": str(config_file)}, cwd=cwd).num_images == 12
    assert load_settings(config_file, env={**env, "LENSA_CONFIG": str(user)}, cwd=cwd).num_images == 12
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={}, cwd=cwd)


@pytest.mark.parametrize(("text", "env", "match"), [
    ("stepz = 3\n", {}, "unknown key 'stepz'"),
    ("[sagemaker]\ninstance = 'x'\n", {}, r"unknown key\(s\) \['instance'\] in \[sagemaker\]"),
    ("[training]\nlearning_rat = 1\n", {}, r"\[training\]"),
    ("backend = 'gpu'\n", {}, "'backend' must be one of local, sagemaker"),
    ("steps = 'many'\n", {}, "whole number"),
    ("steps = [\n", {}, "not valid TOML"),
    ("", {"LENSA_STEPS": "ten"}, "LENSA_STEPS='ten' must be a whole number"),
    ("", {"LENSA_SPOT": "maybe"}, "true or false"),
])
def test_bad_settings_name_the_key(tmp_path: Path, text: str, env: dict[str, str], match: str) -> None:
    path = tmp_path / "lensa.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(path, env=env, cwd=tmp_path)
