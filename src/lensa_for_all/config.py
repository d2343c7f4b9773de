"""Every training hyper-parameter in one frozen, validated value class.

A :class:`TrainingConfig` is checked when it is built, so a bad setting fails on the user's laptop with
a message naming the field, not twenty minutes into a paid SageMaker job. It round-trips through JSON
(``training_config.json`` travels in the source dir and lands beside the artifacts).
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from .errors import ConfigError
from .subjects import classes_of_kind, kind_of, resolve_subject

__all__ = ["TrainingConfig", "PEOPLE_CLASSES", "PET_CLASSES", "DEFAULT_BASE_MODEL"]

DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# Kept for compatibility; the table lives in lensa_for_all.subjects.
PEOPLE_CLASSES = classes_of_kind("person")
PET_CLASSES = classes_of_kind("pet")

METHODS = ("lora", "full")
MIXED_PRECISION = ("no", "fp16", "bf16", "auto")
REPORT_TO = ("none", "tensorboard", "wandb")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
EARLY_STOPPING_METRICS = ("fid", "subject_similarity", "likeness")
_PLACEHOLDERS = frozenset({"token", "subject_class"})


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


def _check(cond: bool, field: str, why: str) -> None:
    if not cond:
        raise ConfigError(f"TrainingConfig.{field}: {why}")


def _positive(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    _check(value is None or value > 0, attribute.name, f"must be > 0, got {value!r}")


def _non_negative(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    _check(value is None or value >= 0, attribute.name, f"must be >= 0, got {value!r}")


def _one_of(*choices: str) -> Any:
    def check(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        _check(value in choices, attribute.name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")

    return check


def _template_fields(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"prompt template {template!r} is malformed: {exc}") from exc


@attrs.frozen(kw_only=True)
class TrainingConfig:
    """DreamBooth hyper-parameters; build one with :meth:`for_subject` for tested presets.

    Prompt templates may use ``{token}`` and ``{subject_class}``. ``max_train_steps=None`` picks the
    number of steps from the number of photos (``steps_per_photo``, clamped to
    ``[min_auto_steps, max_auto_steps]``).
    """

    # the model
    base_model: str = DEFAULT_BASE_MODEL
    revision: str | None = None
    method: str = attrs.field(default="lora", validator=_one_of(*METHODS))
    # "auto": from the base model's model_index.json; "sd1" (SD 1.x/2.x) or "sdxl" forces a family
    model_family: str = attrs.field(default="auto", validator=_one_of("auto", "sd1", "sdxl"))
    # SDXL's own VAE overflows in float16: with mixed_precision fp16 its latents come from this VAE (None: the base's)
    fp16_vae: str | None = "madebyollin/sdxl-vae-fp16-fix"
    # the subject
    token: str = "ohwx"
    subject_class: str = "person"
    instance_prompt: str = "a photo of {token} {subject_class}"
    class_prompt: str | None = "a photo of {subject_class}"
    # prior preservation
    with_prior_preservation: bool = False
    prior_loss_weight: float = attrs.field(default=1.0, validator=_non_negative)
    num_class_images: int = attrs.field(default=200, validator=_positive)
    class_image_inference_steps: int = attrs.field(default=25, validator=_positive)
    class_image_batch_size: int = attrs.field(default=4, validator=_positive)
    # images
    resolution: int = attrs.field(default=512, validator=_positive)
    center_crop: bool = True
    random_flip: bool = True
    # optimisation
    train_batch_size: int = attrs.field(default=1, validator=_positive)
    gradient_accumulation_steps: int = attrs.field(default=1, validator=_positive)
    max_train_steps: int | None = attrs.field(default=None, validator=_positive)
    steps_per_photo: int = attrs.field(default=100, validator=_positive)
    min_auto_steps: int = attrs.field(default=400, validator=_positive)
    max_auto_steps: int = attrs.field(default=1600, validator=_positive)
    learning_rate: float = 1e-4
    text_encoder_learning_rate: float | None = None
    lr_scheduler: str = attrs.field(default="constant", validator=_one_of(*LR_SCHEDULERS))
    lr_warmup_steps: int = attrs.field(default=0, validator=_non_negative)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = attrs.field(default=1e-2, validator=_non_negative)
    adam_epsilon: float = attrs.field(default=1e-8, validator=_positive)
    max_grad_norm: float | None = attrs.field(default=1.0, validator=_positive)
    train_text_encoder: bool = False
    # LoRA
    lora_rank: int = attrs.field(default=16, validator=_positive)
    lora_alpha: float | None = attrs.field(default=None, validator=_positive)
    lora_dropout: float = attrs.field(default=0.0, validator=_non_negative)
    lora_target_modules: tuple[str, ...] = attrs.field(
        default=("to_q", "to_k", "to_v", "to_out.0"), converter=_tuple_of_str
    )
    text_encoder_lora_target_modules: tuple[str, ...] = attrs.field(
        default=("q_proj", "k_proj", "v_proj", "out_proj"), converter=_tuple_of_str
    )
    # memory and speed
    use_8bit_adam: bool = False
    mixed_precision: str = attrs.field(default="auto", validator=_one_of(*MIXED_PRECISION))
    gradient_checkpointing: bool = False
    cache_latents: bool = True  # False: encode with the VAE at every step (slower; for very many class images)
    # loss
    snr_gamma: float | None = attrs.field(default=None, validator=_positive)
    offset_noise: float = attrs.field(default=0.0, validator=_non_negative)
    seed: int = 0
    # validation, checkpoints, early stopping, tracking
    validation_prompts: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    validation_steps: int = attrs.field(default=0, validator=_non_negative)
    validation_inference_steps: int = attrs.field(default=25, validator=_positive)
    checkpointing_steps: int = attrs.field(default=0, validator=_non_negative)
    checkpoints_total_limit: int | None = attrs.field(default=2, validator=_positive)
    resume_from: str | None = "latest"
    early_stopping: bool = False
    early_stopping_metric: str = attrs.field(default="fid", validator=_one_of(*EARLY_STOPPING_METRICS))
    early_stopping_patience: int = attrs.field(default=3, validator=_positive)
    report_to: str = attrs.field(default="none", validator=_one_of(*REPORT_TO))

    PRESET_KINDS: ClassVar[tuple[str, ...]] = ("people", "pets", "objects")

    def __attrs_post_init__(self) -> None:
        _check(bool(self.base_model.strip()), "base_model", "must name a Hub id or a local folder")
        _check(bool(self.token) and self.token.isalnum() and self.token.isascii(), "token",
               f"must be one ASCII word of letters and digits (a rare one such as 'ohwx'), got {self.token!r}")
        _check(bool(self.subject_class.strip()), "subject_class", "must not be empty (e.g. 'person', 'dog')")
        _check(self.resolution % 8 == 0, "resolution",
               f"must be a multiple of 8 (the VAE downsamples by 8), got {self.resolution}")
        _check(math.isfinite(self.learning_rate) and self.learning_rate > 0, "learning_rate",
               f"must be a positive number, got {self.learning_rate!r}")
        _check(self.text_encoder_learning_rate is None or self.text_encoder_learning_rate > 0,
               "text_encoder_learning_rate", f"must be a positive number, got {self.text_encoder_learning_rate!r}")
        _check(0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, "adam_beta1",
               "adam betas must be in [0, 1)")
        _check(self.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        _check(self.min_auto_steps <= self.max_auto_steps, "min_auto_steps",
               f"must be <= max_auto_steps ({self.max_auto_steps}), got {self.min_auto_steps}")
        for name in ("instance_prompt", "class_prompt", *("validation_prompts",)):
            templates = self.validation_prompts if name == "validation_prompts" else (getattr(self, name),)
            for template in templates:
                if template is None:
                    continue
                unknown = _template_fields(template) - _PLACEHOLDERS
                _check(not unknown, name, f"unknown placeholder(s) {sorted(unknown)} in {template!r}; "
                       "use {token} and {subject_class}")
        _check(self.token in self.instance_prompt_text.split(), "instance_prompt",
               f"must contain the identifier token {self.token!r} (e.g. 'a photo of {{token}} {{subject_class}}'), "
               f"got {self.instance_prompt!r}")
        for p in self.validation_prompt_texts:
            _check(self.token in p, "validation_prompts", f"each prompt must contain the token {self.token!r}: {p!r}")
        if self.with_prior_preservation:
            _check(bool(self.class_prompt and self.class_prompt.strip()), "class_prompt",
                   "prior preservation needs a class prompt (e.g. 'a photo of {subject_class}')")
            _check(self.class_prompt is None or self.token not in self.class_prompt_text.split(), "class_prompt",
                   f"must not contain the identifier token {self.token!r}: class images show any {self.subject_class}")
        if self.method == "lora":
            _check(len(self.lora_target_modules) > 0, "lora_target_modules", "must name at least one module")
        _check(not (self.early_stopping and (self.validation_steps == 0 or not self.validation_prompts)),
               "early_stopping", "needs validation_steps > 0 and at least one validation prompt to score")
        _check(self.resume_from in (None, "latest") or bool(self.resume_from), "resume_from",
               "must be None, 'latest' or a checkpoint folder")

    # ---- derived values -------------------------------------------------------------------------

    def _fill(self, template: str) -> str:
        return template.format(token=self.token, subject_class=self.subject_class)

    @property
    def instance_prompt_text(self) -> str:
        """The instance prompt with ``{token}`` and ``{subject_class}`` filled in."""
        return self._fill(self.instance_prompt)

    @property
    def class_prompt_text(self) -> str:
        return self._fill(self.class_prompt or "a photo of {subject_class}")

    @property
    def validation_prompt_texts(self) -> tuple[str, ...]:
        return tuple(self._fill(p) for p in self.validation_prompts)

    @property
    def effective_lora_alpha(self) -> float:
        """``lora_alpha`` or, when unset, the rank (a scale of 1)."""
        return float(self.lora_alpha if self.lora_alpha is not None else self.lora_rank)

    @property
    def effective_text_encoder_learning_rate(self) -> float:
        return self.text_encoder_learning_rate if self.text_encoder_learning_rate is not None else self.learning_rate

    def resolve_max_train_steps(self, num_photos: int) -> int:
        """``max_train_steps``, or the automatic count for ``num_photos`` photos."""
        if self.max_train_steps is not None:
            return self.max_train_steps
        return max(self.min_auto_steps, min(self.max_auto_steps, self.steps_per_photo * max(num_photos, 1)))

    @staticmethod
    def subject_kind(subject_class: str, declared: str | None = None) -> str:
        """``"people"``, ``"pets"`` or ``"objects"``: which preset family a class belongs to.

        Lenient (an unlisted class is an object unless ``declared`` says otherwise); :meth:`for_subject`
        refuses unlisted classes without a declared kind.
        """
        return {"person": "people", "pet": "pets", "object": "objects"}[kind_of(subject_class, declared)]

    # ---- presets ----------------------------------------------------------------------------------

    @classmethod
    def for_subject(cls, subject_class: str, method: str = "lora", *, subject_kind: str | None = None,
                    **overrides: Any) -> TrainingConfig:
        """Presets that work: people get prior preservation and a trained text encoder, pets and objects
        a short run without class images. ``overrides`` replace any field. A LoRA on an SDXL base (a local
        folder, a cached Hub id, or ``model_family="sdxl"``) also gets SDXL's settings (1024 px, gradient
        checkpointing, text encoders at 5e-6); docs/training.md gives the source of each number.

        ``subject_class`` must be in the subject table (:mod:`lensa_for_all.subjects`; an alias such as
        ``"people"`` becomes ``"person"``) unless ``subject_kind`` (``"person"``, ``"pet"`` or ``"object"``)
        says which preset an unlisted class gets; a :class:`~lensa_for_all.errors.UsageError` otherwise.
        """
        _check(method in METHODS, "method", f"must be one of {METHODS}, got {method!r}")
        subject = resolve_subject(subject_class, subject_kind)
        kind = subject.preset
        preset: dict[str, Any] = {"subject_class": subject.name, "method": method}
        if kind == "people":
            preset.update(with_prior_preservation=True, num_class_images=200, train_text_encoder=True,
                          steps_per_photo=100, prior_loss_weight=1.0)
            if method == "full":
                preset.update(learning_rate=2e-6, text_encoder_learning_rate=1e-6,
                              min_auto_steps=800, max_auto_steps=1600)
            else:
                preset.update(learning_rate=1e-4, text_encoder_learning_rate=5e-5,
                              min_auto_steps=400, max_auto_steps=1600)
        else:
            preset.update(with_prior_preservation=False, train_text_encoder=False, steps_per_photo=40,
                          min_auto_steps=200, max_auto_steps=400,
                          learning_rate=1e-4 if method == "lora" else 2e-6)
        unknown = set(overrides) - set(cls.field_names())
        if unknown:
            raise ConfigError(f"TrainingConfig has no field(s) {sorted(unknown)}")
        if method == "lora":  # the base model's family adds its own (SDXL: 1024 px, gradient checkpointing)
            from .families import family_hint

            family = family_hint(str(overrides.get("base_model", DEFAULT_BASE_MODEL)), overrides.get("revision"),
                                 str(overrides.get("model_family", "auto")))
            if family is not None:
                preset.update(family.preset)
        preset.update(overrides)
        return cls(**preset)

    # ---- serialisation ----------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(a.name for a in attrs.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"TrainingConfig: unknown key(s) {unknown}; known keys are listed in docs/training.md")
        return cls(**dict(data))

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Return the JSON text; also write it atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            from .atomic import write_text_atomic

            write_text_atomic(path, text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> TrainingConfig:
        """Read from JSON text or from a file path."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise ConfigError(f"Config file {path} does not exist")
            text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"Config is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("Config JSON must be an object of field names to values")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied (validated again)."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ConfigError(f"TrainingConfig has no field(s) {unknown}")
        return attrs.evolve(self, **changes)

    def with_hyperparameters(self, hyperparameters: Mapping[str, Any]) -> TrainingConfig:
        """Apply SageMaker-style hyper-parameters, whose values may be strings (SageMaker stringifies them)."""
        unknown = sorted(set(hyperparameters) - set(self.field_names()))
        if unknown:
            raise ConfigError(f"Unknown hyper-parameter(s) {unknown}; they must be TrainingConfig fields")
        current = attrs.asdict(self)
        changes = {k: _coerce(k, v, current[k]) for k, v in hyperparameters.items()}
        return self.replace(**changes)


def _coerce(name: str, value: Any, current: Any) -> Any:
    """Turn a stringified hyper-parameter back into the field's type."""
    if not isinstance(value, str):
        return value
    raw = value.strip()
    parsed: Any
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw
    if parsed is None or (isinstance(parsed, str) and parsed.lower() in ("none", "null")):
        return None
    ftype = str(attrs.fields_dict(TrainingConfig)[name].type)
    if ftype.startswith("bool"):
        if isinstance(parsed, str):
            low = parsed.lower()
            _check(low in ("true", "false", "1", "0", "yes", "no"), name, f"expects true/false, got {value!r}")
            return low in ("true", "1", "yes")
        return bool(parsed)
    if ftype.startswith("int"):
        try:
            return int(parsed)
        except (TypeError, ValueError):
            raise ConfigError(f"TrainingConfig.{name}: expects an integer, got {value!r}") from None
    if ftype.startswith("float"):
        try:
            return float(parsed)
        except (TypeError, ValueError):
            raise ConfigError(f"TrainingConfig.{name}: expects a number, got {value!r}") from None
    if ftype.startswith("tuple"):
        return parsed if isinstance(parsed, list) else _tuple_of_str(str(parsed))
    return parsed if isinstance(parsed, str) else str(parsed)
