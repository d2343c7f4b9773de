"""The plan of a run, checked before any stage starts: fail in seconds, not after a paid job.

:meth:`Pipeline.plan` (and ``lensa-for-all run --dry-run``) checks everything a run will need, in the
order that costs least: the run folder's state, the photo folder, the subject class, the styles, the
generation settings, the base model (on disk, in the Hugging Face cache, or on the Hub), the method and
precision against this machine's device, then for SageMaker the region, the cost estimate against
``max_cost_usd``, the credentials, the execution role, the bucket and the instance quota. The first
problem raises the library's usual error, written with the caller's names for the settings
(:data:`PYTHON_NAMES` or :data:`CLI_NAMES`). Nothing is written anywhere.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import (
    AWSConfigurationError,
    ConfigError,
    CostLimitExceeded,
    LikenessUnavailable,
    ModelNotFoundError,
    PhotoSetError,
    UsageError,
)

if TYPE_CHECKING:
    from ..backends.pricing import CostEstimate
    from ..subjects import Subject
    from .run import Pipeline

__all__ = ["RunPlan", "SettingNames", "PYTHON_NAMES", "CLI_NAMES", "make_plan", "check_training"]

_NO_BF16 = frozenset({"T4", "V100"})  # GPUs before Ampere: no bfloat16 arithmetic
_PHOTO_JUNK = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".localized", ".directory"})


@attrs.frozen
class SettingNames:
    """How messages name each setting: Python keywords for the library, flags and variables for the CLI."""

    subject_class: str = "subject_class="
    subject_kind: str = "subject_kind="
    styles: str = "styles="
    base_model: str = "base_model="
    mixed_precision: str = "mixed_precision="
    use_8bit_adam: str = "use_8bit_adam="
    region: str = "sagemaker={'region': ...} (or AWS_DEFAULT_REGION)"
    profile: str = "sagemaker={'profile': ...}"
    instance_type: str = "sagemaker={'instance_type': ...}"
    spot: str = "sagemaker={'spot': True}"
    max_cost: str = "sagemaker={'max_cost_usd': ...}"
    role: str = "sagemaker={'role': ...}"
    bucket: str = "sagemaker={'bucket': ...}"
    run_dir: str = "run_dir="
    command_line: bool = False


PYTHON_NAMES = SettingNames()
CLI_NAMES = SettingNames(
    subject_class="--class", subject_kind="--subject-kind", styles="--styles", base_model="--base-model",
    mixed_precision="mixed_precision in the [training] table of the config file",
    use_8bit_adam="use_8bit_adam in the [training] table of the config file",
    region="--region (or LENSA_REGION, AWS_DEFAULT_REGION)", profile="--profile (or AWS_PROFILE)",
    instance_type="--instance-type (or LENSA_INSTANCE_TYPE)", spot="--spot",
    max_cost="--max-cost (or LENSA_MAX_COST_USD)", role="role in the [sagemaker] table of the config file "
    "(or LENSA_ROLE)", bucket="bucket in the [sagemaker] table of the config file (or LENSA_BUCKET)",
    run_dir="--run-dir", command_line=True,
)


@attrs.frozen(kw_only=True)
class RunPlan:
    """What a run will do, checked: ``summary()`` for people, ``to_dict()`` for ``--dry-run --json``."""

    stages: tuple[str, ...]
    reused: tuple[str, ...]
    photos: str
    num_photos: int
    subject: Subject
    method: str
    base_model: str
    base_model_source: str
    steps: int
    num_images: int
    styles: tuple[str, ...]
    backend: str
    device: str | None
    run_dir: Path
    out_dir: Path
    estimate: CostEstimate | None = None
    train_minutes: float | None = None
    max_cost_usd: float | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        est = self.estimate
        return {
            "stages": list(self.stages), "reused": list(self.reused), "photos": self.photos,
            "num_photos": self.num_photos, "subject_class": self.subject.name, "subject_kind": self.subject.kind,
            "method": self.method, "base_model": self.base_model, "base_model_source": self.base_model_source,
            "steps": self.steps, "num_images": self.num_images, "styles": list(self.styles),
            "backend": self.backend, "device": self.device, "run_dir": str(self.run_dir),
            "out_dir": str(self.out_dir), "train_minutes": self.train_minutes,
            "cost_usd": est.usd if est else None, "instance_type": est.instance_type if est else None,
            "region": est.region if est else None, "spot": est.spot if est else None,
            "max_cost_usd": self.max_cost_usd, "notes": list(self.notes),
        }

    def summary(self) -> str:
        """The plan in a few lines: stages, photos, steps, time and cost, where the outputs go."""
        todo = [s for s in self.stages if s not in self.reused]
        stages = ", ".join(f"{s} (reused)" if s in self.reused else s for s in self.stages)
        where = self.backend if self.device is None else f"{self.backend} ({self.device})"
        lines = [
            f"Plan:    {stages}" + ("" if todo else " - nothing to do"),
            f"Photos:  {self.num_photos} file{'s' if self.num_photos != 1 else ''} in {self.photos} "
            "(checked and cropped in the photos stage)",
            f"Subject: {self.subject.name} ({self.subject.kind})",
            f"Train:   {self.method} on {self.base_model} ({self.base_model_source}), {self.steps} steps, on {where}",
            f"Avatars: {self.num_images} in " + (", ".join(self.styles) if self.styles else "all styles"),
        ]
        if self.estimate is not None:
            lines.append(f"Cost:    {self.estimate}"
                         + (f"; limit ${self.max_cost_usd:.2f}" if self.max_cost_usd is not None else ""))
        elif self.train_minutes is not None:
            where = "this CPU" if self.device == "cpu" else "an A10G-class GPU"
            lines.append(f"Time:    about {max(self.train_minutes, 1):.0f} min of training on {where}")
        lines.append(f"Run:     {self.run_dir}")
        lines.append(f"Out:     {self.out_dir}")
        lines += [f"Note:    {n}" for n in self.notes]
        return "\n".join(lines)


def make_plan(pipeline: Pipeline, *, num_images: int, styles: Sequence[str] | None, run_dir: Path, out_dir: Path,
              names: SettingNames = PYTHON_NAMES, keep_best: int | None = None) -> RunPlan:
    """Check everything ``pipeline.run`` will need (see the module docstring); raise the first problem."""
    from ..config import TrainingConfig
    from ..subjects import resolve_subject

    notes: list[str] = []
    reused, recorded = _check_run_folder(run_dir, names)
    label, count = _check_photos(pipeline.photos)
    subject = resolve_subject(pipeline.subject_class, getattr(pipeline, "subject_kind", None),
                              class_option=names.subject_class, kind_option=names.subject_kind)
    chosen_styles = _check_styles(pipeline, styles, subject, names)
    if keep_best is not None:  # avatars are picked on this machine, whatever the backend
        from ..likeness import INSTALL_HINT, is_available

        if not is_available():
            raise LikenessUnavailable(f"keep_best picks avatars by face likeness, which needs the face models: "
                                      f"{INSTALL_HINT}.")
        notes.append(f"{num_images} candidates are rendered in the run folder; the {keep_best} most like the "
                     "subject's photos are kept.")
    config: TrainingConfig = pipeline.config
    steps = config.resolve_max_train_steps(count)
    backend_kind = _backend_kind(pipeline)
    source = "not checked: a custom backend"
    if backend_kind is not None:
        source = _check_base_model(config.base_model, config.revision, remote=backend_kind == "sagemaker",
                                   names=names, notes=notes)
    device = None
    estimate = None
    minutes = None
    max_cost = None
    trained = "train" in reused and recorded.get("config") == config.to_dict()
    if trained:  # the model is there: the training device and the AWS account are not needed again
        notes.append("Training finished in an earlier run with these settings; it is reused if the photos did "
                     "not change.")
    elif backend_kind == "local":
        device = _check_device(config, names, notes)
        _check_extras(config)
        minutes = _local_minutes(config, count, device)
    elif backend_kind == "sagemaker":
        options = _sagemaker_options(pipeline)
        max_cost = options.get("max_cost_usd")
        estimate = _check_aws(options, config, max(count, 1), names, notes)
    return RunPlan(stages=("photos", "train", "generate"), reused=reused, photos=label, num_photos=count,
                   subject=subject, method=config.method, base_model=config.base_model, base_model_source=source,
                   steps=steps, num_images=num_images, styles=chosen_styles, backend=pipeline.backend_name,
                   device=device, run_dir=run_dir, out_dir=out_dir, estimate=estimate, train_minutes=minutes,
                   max_cost_usd=max_cost, notes=tuple(notes))


def check_training(config: Any, photos: str | os.PathLike[str], *, backend: str = "local",
                   sagemaker: Mapping[str, Any] | None = None, names: SettingNames = PYTHON_NAMES) -> list[str]:
    """What ``lensa-for-all train`` checks before training: photos, base model, then device or AWS and cost.

    Returns notes for the user (e.g. no GPU); raises the first problem.
    """
    notes: list[str] = []
    _, count = _check_photos(photos)
    _check_base_model(config.base_model, config.revision, remote=backend == "sagemaker", names=names, notes=notes)
    if backend == "sagemaker":
        options = dict(sagemaker or {})
        options.setdefault("instance_type", "ml.g5.2xlarge")
        options.setdefault("spot", True)
        _check_aws(options, config, max(count, 1), names, notes)
    else:
        _check_device(config, names, notes)
        _check_extras(config)
    return notes


# -- the checks, cheapest first -------------------------------------------------------------------------


def _check_run_folder(run_dir: Path, names: SettingNames) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Read the run folder's state (never write it): the stages an earlier run finished, and its settings."""
    from ..errors import RunStateError
    from .state import RunState

    if RunState.exists(run_dir):
        state = RunState.load(run_dir)
        done = tuple(s for s in ("photos", "train", "generate") if (state.stage(s) or {}).get("status") == "done")
        return done, dict(state.run)
    leftovers = [name for name in ("photos", "model", "model.work") if (run_dir / name).exists()]
    if leftovers:
        raise RunStateError(f"{run_dir} holds {', '.join(leftovers)} but no run state, so they may belong to "
                            f"something else. Choose another run folder ({names.run_dir}) or remove them.")
    return (), {}


def _check_photos(photos: Any) -> tuple[str, int]:
    if hasattr(photos, "photos"):  # an already checked PhotoSet
        root = getattr(photos, "root", None)
        return (str(root) if root else "the given PhotoSet"), len(photos.photos)
    if isinstance(photos, (str, os.PathLike)):
        folder = Path(photos)
        if not folder.is_dir():
            raise PhotoSetError(f"Photo folder {folder} does not exist or is not a folder; pass the folder that "
                                "holds the photos.")
        try:
            files = [p for p in folder.iterdir() if p.name.lower() not in _PHOTO_JUNK and p.name != "manifest.json"
                     and not p.name.startswith(".") and (p.is_file() or p.is_symlink())]
        except OSError as exc:
            raise PhotoSetError(f"Cannot list {folder} ({exc.strerror}); check its permissions.") from exc
        if not files:
            raise PhotoSetError(f"No files in {folder}: put 4-20 photos of the subject directly in that folder "
                                "(sub-folders are not read).")
        return str(folder), len(files)
    listed = [Path(p) for p in photos]
    if not listed:
        raise PhotoSetError("No photos given: pass a folder or a list of 4-20 photo files.")
    missing = [str(p) for p in listed if not p.is_file()]
    if len(missing) == len(listed):
        raise PhotoSetError(f"None of the {len(listed)} photo files exist (first: {missing[0]}).")
    return f"{len(listed)} listed files", len(listed)


def _check_styles(pipeline: Pipeline, styles: Sequence[str] | None, subject: Subject,
                  names: SettingNames) -> tuple[str, ...]:
    from ..prompts import StyleCatalogue

    prompts: Any = pipeline.prompts
    if prompts is not None and not hasattr(prompts, "generate"):
        if styles:
            raise UsageError("styles apply to the style catalogue; they cannot be combined with your own prompts.")
        if not list(prompts):
            raise UsageError("No prompts given.")
        return ()
    catalogue = prompts.catalogue if prompts is not None else StyleCatalogue.default()
    if not styles:
        return ()
    try:
        return tuple(s.name for s in catalogue.select(styles))
    except ConfigError as exc:
        raise UsageError(f"{names.styles}: {exc}") from None


def _backend_kind(pipeline: Pipeline) -> str | None:
    """``"local"`` or ``"sagemaker"`` for the built-in backends (by name or instance), else ``None``."""
    spec: Any = pipeline._backend_spec
    if isinstance(spec, str):
        return spec
    from ..backends.sagemaker import SageMakerBackend  # light: boto3 is imported when AWS is first called
    from ..training.local import LocalBackend

    if isinstance(spec, LocalBackend):
        return "local"
    if isinstance(spec, SageMakerBackend):  # subclasses too, e.g. the test kit's OfflineSageMakerBackend
        return "sagemaker"
    return None


def _hub_id_shape(base_model: str) -> bool:
    """``organisation/name`` of letters, digits, ``-``, ``_`` and ``.``: what the Hub accepts as a repo id."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", base_model) is not None and ".." not in base_model


def _check_base_model(base_model: str, revision: str | None, *, remote: bool, names: SettingNames,
                      notes: list[str]) -> str:
    """Where the base model comes from (``local folder``, ``cached``, ``on the Hub``); an error if nowhere."""
    from ..training.models import check_base_model, check_model_index

    path = Path(base_model).expanduser()
    if path.exists():
        check_base_model(str(path))
        return "local folder"
    if not _hub_id_shape(base_model):
        if remote:  # a path that may exist only in the training container (a channel, a mounted volume)
            notes.append(f"Base model {base_model} is not a folder on this machine nor a Hub id; the training job "
                         "must find it in its container.")
            return "not checked"
        raise ModelNotFoundError(f"Base model {base_model!r} is neither an existing folder nor a Hub id "
                                 f"(organisation/name). Fix {names.base_model}.")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(base_model, "model_index.json", revision=revision)
    if isinstance(cached, str):
        check_model_index(base_model, json.loads(Path(cached).read_text(encoding="utf-8")))
        return "cached"
    from ..prompts.magic import hub_unreachable

    if hub_unreachable():
        if remote:
            notes.append(f"{base_model} is not in this machine's Hugging Face cache and the Hub cannot be reached "
                         "from here, so it was not checked; the training job downloads it.")
            return "not checked"
        raise ModelNotFoundError(
            f"Base model {base_model!r} is not in the Hugging Face cache and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set, or there is no network). Download it once while online, or pass a local "
            f"folder with {names.base_model}.")
    try:
        check_base_model(base_model, revision)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"{exc} ({names.base_model})") from None
    return "on the Hub, downloaded on first use"


def _check_device(config: Any, names: SettingNames, notes: list[str]) -> str:
    """The device local training will use; an error for a precision or optimiser it cannot run."""
    import torch

    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)}"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    if config.mixed_precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError(f"mixed_precision 'fp16' needs a CUDA GPU and this machine has none ({device}). Set "
                          f"{names.mixed_precision} to 'auto' or 'no', or train with --backend sagemaker.")
    if config.mixed_precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"mixed_precision 'bf16' is not supported by this GPU ({device}). Set "
                          f"{names.mixed_precision} to 'auto' or 'fp16'.")
    if config.use_8bit_adam and not device.startswith("cuda"):
        raise ConfigError(f"8-bit Adam needs a CUDA GPU and this machine has none ({device}). Turn off "
                          f"{names.use_8bit_adam}.")
    if device == "cpu" and _looks_full_size(config.base_model):
        notes.append("No GPU found: training a full-size Stable Diffusion model on the CPU takes many hours. "
                     "Use a machine with a GPU, or --backend sagemaker.")
    return device


def _check_extras(config: Any) -> None:
    """Optional packages local training will import (a SageMaker job installs them in its container)."""
    from ..likeness import INSTALL_HINT, is_available

    if config.early_stopping and config.early_stopping_metric == "likeness" and not is_available():
        raise LikenessUnavailable(f"Early stopping on likeness needs the face models: {INSTALL_HINT}. Or choose "
                                  "another early_stopping_metric ('fid', 'subject_similarity'), or train on "
                                  "SageMaker, whose job installs them.")


def _local_minutes(config: Any, num_photos: int, device: str) -> float | None:
    """Training minutes: measured CPU seconds per step by model size on CPU, an A10G's speed on a GPU."""
    if device == "cpu":
        from ..cpu_threads import TRAIN_STEP_S, model_size

        per_step = TRAIN_STEP_S[model_size(config.base_model)] * (2 if config.with_prior_preservation else 1)
        return config.resolve_max_train_steps(max(num_photos, 1)) * per_step / 60
    if device.startswith("cuda"):
        from ..backends.pricing import FIXED_OVERHEAD_S, estimate_cost

        return max(1.0, (estimate_cost(config, max(num_photos, 1)).seconds - FIXED_OVERHEAD_S) / 60)
    return None


def _looks_full_size(base_model: str) -> bool:
    """Whether a model is SD-sized (its UNet's widest block has at least 640 channels); Hub ids are assumed so."""
    config = Path(base_model) / "unet" / "config.json"
    if not config.is_file():
        return not Path(base_model).exists()
    try:
        widths = json.loads(config.read_text(encoding="utf-8")).get("block_out_channels") or [0]
    except (OSError, ValueError):
        return True
    return max(int(w) for w in widths) >= 640


def _sagemaker_options(pipeline: Pipeline) -> dict[str, Any]:
    spec: Any = pipeline._backend_spec
    if isinstance(spec, str):
        options = dict(pipeline.sagemaker_options)
        options.setdefault("instance_type", "ml.g5.2xlarge")
        options.setdefault("spot", True)
        return options
    keys = ("region", "profile", "instance_type", "spot", "max_cost_usd", "role", "bucket")
    options = {k: getattr(spec, k, None) for k in keys}
    options["boto_session"] = getattr(spec, "_boto_session", None)
    return options


def _check_aws(options: Mapping[str, Any], config: Any, num_photos: int, names: SettingNames,
               notes: list[str]) -> CostEstimate:
    """Region, cost, credentials, role, bucket and quota, in that order; the cost estimate."""
    from ..backends.aws_session import AWSSession, botocore_debug_muted
    from ..backends.pricing import estimate_cost, instance_spec

    instance_type = str(options.get("instance_type") or "ml.g5.2xlarge")
    spot = bool(options.get("spot", True))
    try:
        spec = instance_spec(instance_type)
    except ConfigError as exc:
        raise ConfigError(f"{exc} Fix {names.instance_type}.") from None
    if getattr(config, "mixed_precision", "auto") == "bf16" and spec.gpu in _NO_BF16:
        raise ConfigError(f"mixed_precision 'bf16' does not run on {instance_type} ({spec.gpu} GPUs have no bf16). "
                          f"Set {names.mixed_precision} to 'auto' or 'fp16', or choose an ml.g5 instance with "
                          f"{names.instance_type}.")
    saving = bool(getattr(config, "gradient_checkpointing", False) or getattr(config, "use_8bit_adam", False))
    if getattr(config, "method", "lora") == "full" and spec.gpu_memory_gib < 24 and not saving:
        notes.append(f"Full fine-tuning on {instance_type} ({spec.gpu_memory_gib} GB per GPU) may run out of memory; "
                     "an ml.g5 instance (24 GB), or gradient_checkpointing and use_8bit_adam, avoid that.")
    aws = AWSSession(options.get("region"), profile=options.get("profile"), boto_session=options.get("boto_session"))
    try:
        region = aws.region
    except AWSConfigurationError:
        raise AWSConfigurationError(
            f"No AWS region is set, so the job can be neither priced nor started. Pass {names.region}, e.g. "
            "us-east-1, or run `aws configure`.") from None
    estimate = estimate_cost(config, num_photos, instance_type=instance_type, spot=spot, region=region)
    max_cost = options.get("max_cost_usd")
    if max_cost is not None and estimate.usd > float(max_cost):
        if not names.command_line:  # the words SageMakerBackend uses for the same refusal
            raise CostLimitExceeded(
                f"The estimated cost ${estimate.usd:.2f} is over max_cost_usd=${float(max_cost):.2f}; nothing was "
                f"launched. {estimate}. Raise max_cost_usd, use spot=True, a cheaper instance_type, or fewer steps.")
        raise CostLimitExceeded(
            f"The estimated cost ${estimate.usd:.2f} is over your limit of ${float(max_cost):.2f} "
            f"({names.max_cost}); nothing was started. {estimate}. Raise the limit, use spot instances "
            f"({names.spot}), a cheaper {names.instance_type}, or fewer steps.")
    with botocore_debug_muted():
        try:
            account = aws.account_id
        except AWSConfigurationError as exc:
            if "no AWS credentials were found" not in str(exc):
                raise AWSConfigurationError(f"{exc} To use another profile, pass {names.profile}.") from None
            raise AWSConfigurationError(
                "No AWS credentials were found, so nothing can be uploaded or started. Run `aws configure` (or "
                f"`aws sso login`), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or choose a profile with "
                f"{names.profile}.") from None
        try:
            aws.resolve_role(options.get("role"))
        except AWSConfigurationError as exc:
            text = str(exc).split(" Create an IAM role")[0]
            raise AWSConfigurationError(
                f"{text} Name the execution role with {names.role}, or create an IAM role named "
                "'LensaForAllSageMakerRole' that SageMaker can assume, with AmazonSageMakerFullAccess "
                "(docs/sagemaker.md lists the narrower permissions).") from None
        _check_bucket(aws, options.get("bucket"), account, names, notes)
        _check_quota(aws, instance_type, spot, names, notes)
    return estimate


def _check_bucket(aws: Any, bucket: str | None, account: str, names: SettingNames, notes: list[str]) -> None:
    from botocore.exceptions import ClientError

    from ..backends.aws_session import error_code

    name = bucket or aws.default_bucket_name()
    try:
        aws.call(aws.client("s3").head_bucket, what=f"check bucket {name}", Bucket=name, ExpectedBucketOwner=account)
        return
    except ClientError as exc:
        code = error_code(exc)
    if code in ("403", "AccessDenied", "Forbidden"):
        raise AWSConfigurationError(f"Bucket {name!r} belongs to another account or you may not read it. Name a "
                                    f"bucket you own with {names.bucket}.")
    if bucket and bucket != aws.default_bucket_name():
        raise AWSConfigurationError(f"Bucket {name!r} does not exist in account {account}. Create it (private, "
                                    f"encrypted), or leave {names.bucket} unset to use {aws.default_bucket_name()!r}, "
                                    "which is created for you.")
    notes.append(f"Bucket {name} does not exist yet; it is created (private, encrypted) when the job starts.")


def _check_quota(aws: Any, instance_type: str, spot: bool, names: SettingNames, notes: list[str]) -> None:
    """Refuse a launch the account's SageMaker quota would refuse (0 instances); a note when unreadable."""
    wanted = f"{instance_type} for {'spot ' if spot else ''}training job usage"
    try:
        pages = aws.client("service-quotas").get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker")
        value = next((q.get("Value") for page in pages for q in page.get("Quotas", [])
                      if q.get("QuotaName") == wanted), None)
    except Exception as exc:  # no permission, no such API on this endpoint: the quota is simply unknown
        notes.append(f"The quota for {wanted} could not be read ({type(exc).__name__}); if the job is refused, "
                     "request an increase in the Service Quotas console.")
        return
    if value is None:
        notes.append(f"No quota named {wanted!r} was listed; if the job is refused, check Service Quotas.")
    elif float(value) < 1:
        other = "--no-spot" if spot else "--spot"
        raise AWSConfigurationError(
            f"Your account's SageMaker quota for {wanted} in {aws.region} is 0, so the job would be refused. "
            f"Request an increase in the Service Quotas console (SageMaker, '{wanted}'), or choose another "
            f"{names.instance_type}" + (f" or {other}" if names.command_line else "") + ".")
