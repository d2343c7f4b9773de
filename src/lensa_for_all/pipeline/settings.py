"""Run settings from a TOML file and ``LENSA_*`` environment variables, overridden by command-line flags.

Precedence, lowest first: built-in defaults < the config file < environment variables < flags. Only one
config file is read: ``--config FILE``, else ``$LENSA_CONFIG``, else ``./lensa.toml``, else the user
config file (``$XDG_CONFIG_HOME/lensa-for-all/config.toml``, by default ``~/.config/lensa-for-all/
config.toml``; ``%APPDATA%\\lensa-for-all\\config.toml`` on Windows). docs/cli.md lists every key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError, UsageError

__all__ = ["Settings", "load_settings", "find_config_file", "user_config_file", "ENV_VARS", "GENERATION_KEYS",
           "SAGEMAKER_KEYS"]

BACKENDS = ("local", "sagemaker")
METHODS = ("lora", "full")

# AvatarModel.generate / AvatarModel.load keywords a config file's [generation] table may set.
GENERATION_KEYS = frozenset({
    "num_inference_steps", "guidance_scale", "scheduler", "width", "height", "negative_prompt", "lora_scale",
    "batch_size", "device", "dtype", "magic", "keep_best",
})
# SageMakerBackend keywords a config file's [sagemaker] table may set.
SAGEMAKER_KEYS = frozenset({
    "role", "bucket", "region", "instance_type", "spot", "max_cost_usd", "profile", "prefix", "image_uri",
    "instance_count", "volume_size_gb", "max_run_s", "max_wait_s", "kms_key_id", "environment", "subnets",
    "security_group_ids", "tags", "stop_on_interrupt", "download", "poll_interval_s", "max_poll_interval_s",
})

# environment variable -> (table or "" for the top level, key, type)
ENV_VARS: dict[str, tuple[str, str, type]] = {
    "LENSA_BACKEND": ("", "backend", str),
    "LENSA_CLASS": ("", "subject_class", str),
    "LENSA_SUBJECT_KIND": ("", "subject_kind", str),
    "LENSA_METHOD": ("", "method", str),
    "LENSA_BASE_MODEL": ("", "base_model", str),
    "LENSA_STEPS": ("", "steps", int),
    "LENSA_NUM_IMAGES": ("", "num_images", int),
    "LENSA_STYLES": ("", "styles", tuple),
    "LENSA_OUT": ("", "out", str),
    "LENSA_RUN_DIR": ("", "run_dir", str),
    "LENSA_SEED": ("", "seed", int),
    "LENSA_INSTANCE_TYPE": ("sagemaker", "instance_type", str),
    "LENSA_MAX_COST_USD": ("sagemaker", "max_cost_usd", float),
    "LENSA_SPOT": ("sagemaker", "spot", bool),
    "LENSA_REGION": ("sagemaker", "region", str),
    "LENSA_BUCKET": ("sagemaker", "bucket", str),
    "LENSA_ROLE": ("sagemaker", "role", str),
    "LENSA_PROFILE": ("sagemaker", "profile", str),
}

_TOP_KEYS = ("backend", "subject_class", "subject_kind", "method", "base_model", "steps", "num_images", "styles",
             "out", "run_dir", "seed")
_TABLES = ("training", "sagemaker", "generation")


def _choice(*choices: str) -> Any:
    def check(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise UsageError(f"setting {attribute.name!r} must be one of {', '.join(choices)}, not {value!r}")

    return check


def _positive_or_none(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"setting {attribute.name!r} must be a whole number of at least 1, not {value!r}")


def _styles(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(str(v).strip() for v in value if str(v).strip())


def _table(value: Any) -> dict[str, Any]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class Settings:
    """What ``lensa-for-all run`` needs besides the photos; every field has a flag, most an env var.

    ``training`` holds extra :class:`~lensa_for_all.TrainingConfig` fields, ``sagemaker`` keywords for
    :class:`~lensa_for_all.SageMakerBackend` and ``generation`` keywords for avatar generation.
    ``sources`` says where each top-level value came from (``default``, the file path, ``env:NAME``, ``flag``).
    """

    backend: str = attrs.field(default="local", validator=_choice(*BACKENDS))
    subject_class: str = "person"
    subject_kind: str | None = attrs.field(default=None, validator=attrs.validators.optional(
        _choice("person", "pet", "object")))
    method: str = attrs.field(default="lora", validator=_choice(*METHODS))
    base_model: str | None = None
    steps: int | None = attrs.field(default=None, validator=_positive_or_none)
    num_images: int = attrs.field(default=40, validator=_positive_or_none)
    styles: tuple[str, ...] = attrs.field(default=(), converter=_styles)
    out: str | None = None
    run_dir: str | None = None
    seed: int | None = None
    training: Mapping[str, Any] = attrs.field(factory=dict, converter=_table)
    sagemaker: Mapping[str, Any] = attrs.field(factory=dict, converter=_table)
    generation: Mapping[str, Any] = attrs.field(factory=dict, converter=_table)
    config_file: Path | None = None
    sources: Mapping[str, str] = attrs.field(factory=dict, converter=_table, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.subject_class.strip():
            raise UsageError("The subject class (--class, LENSA_CLASS or class in the config file) must not be empty: "
                             "name what the photos show, e.g. person, man, woman, dog or cat.")
        _check_keys("sagemaker", self.sagemaker, SAGEMAKER_KEYS)
        _check_keys("generation", self.generation, GENERATION_KEYS)
        if self.training:
            from ..config import TrainingConfig

            _check_keys("training", self.training, frozenset(TrainingConfig.field_names()))

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["styles"] = list(self.styles)
        data["config_file"] = str(self.config_file) if self.config_file else None
        data["training"], data["sagemaker"], data["generation"] = (
            dict(self.training), dict(self.sagemaker), dict(self.generation))
        data["sources"] = dict(self.sources)
        return data


def _check_keys(table: str, values: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{table}]; known keys: {', '.join(sorted(known))}")


def user_config_file(env: Mapping[str, str] | None = None) -> Path:
    """The per-user config file (it need not exist)."""
    env = os.environ if env is None else env
    if sys.platform == "win32" and env.get("APPDATA"):
        return Path(env["APPDATA"]) / "lensa-for-all" / "config.toml"
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lensa-for-all" / "config.toml"


def find_config_file(explicit: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                     cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """The one config file to read: ``explicit``, ``$LENSA_CONFIG``, ``./lensa.toml``, then the user file.

    A file named explicitly (or by ``LENSA_CONFIG``) must exist; the default locations are optional.
    """
    env = os.environ if env is None else env
    named = explicit if explicit is not None else env.get("LENSA_CONFIG") or None
    if named is not None:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; fix the path given to --config or LENSA_CONFIG.")
        return path
    for candidate in (Path(cwd or ".") / "lensa.toml", user_config_file(env)):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}. Fix the line it names.") from exc
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}.") from exc


def _from_file(path: Path) -> dict[str, Any]:
    raw = _read_toml(path)
    data: dict[str, Any] = {}
    for key, value in raw.items():
        name = "subject_class" if key in ("class", "subject-class") else key.replace("-", "_")
        if name in _TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{name}] must be a table of key = value lines")
            data[name] = {k.replace("-", "_"): v for k, v in value.items()}
        elif name in _TOP_KEYS:
            data[name] = value
        else:
            raise ConfigError(f"{path}: unknown key {key!r}; top-level keys are {', '.join(_TOP_KEYS)} "
                              f"(with 'class' for subject_class) and the tables [{'], ['.join(_TABLES)}]")
    return data


def _parse_env(name: str, text: str, kind: type) -> Any:
    text = text.strip()
    if kind is str:
        return text
    if kind is tuple:
        return _styles(text)
    if kind is bool:
        low = text.lower()
        if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"environment variable {name}={text!r} must be true or false")
        return low in ("1", "true", "yes", "on")
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"environment variable {name}={text!r} must be {what}") from None


def load_settings(config_file: str | os.PathLike[str] | None = None, *, flags: Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None) -> Settings:
    """Merge defaults, the config file, ``LENSA_*`` variables and ``flags`` (``None`` flags are not set).

    ``flags`` uses the top-level names (``backend``, ``subject_class``, ``steps``, ...) and may carry
    ``training``/``sagemaker``/``generation`` mappings, merged key by key over the file's tables.
    """
    env = os.environ if env is None else env
    path = find_config_file(config_file, env=env, cwd=cwd)
    merged: dict[str, Any] = {t: {} for t in _TABLES}
    sources: dict[str, str] = {}

    def apply(values: Mapping[str, Any], source: str) -> None:
        for key, value in values.items():
            if value is None:
                continue
            if key in _TABLES:
                merged[key].update(value)
                for sub in value:
                    sources[f"{key}.{sub}"] = source
            else:
                merged[key] = value
                sources[key] = source

    if path is not None:
        apply(_from_file(path), str(path))
    for name, (table, key, kind) in ENV_VARS.items():
        if env.get(name, "").strip():
            value = _parse_env(name, env[name], kind)
            apply({table: {key: value}} if table else {key: value}, f"env:{name}")
    unknown_flags = sorted(set(flags or {}) - set(_TOP_KEYS) - set(_TABLES))
    if unknown_flags:
        raise ConfigError(f"unknown setting(s) {unknown_flags}")
    apply(dict(flags or {}), "flag")
    try:
        return Settings(**merged, config_file=path, sources=sources)
    except TypeError as exc:  # a value of the wrong type in the file, e.g. steps = "many"
        raise ConfigError(f"invalid setting: {exc}") from exc
