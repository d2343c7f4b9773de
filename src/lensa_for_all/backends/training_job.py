"""The one ``CreateTrainingJob`` request this library sends, as a validated value.

Kept apart from the code that sends it so the exact request (image, instance, spot, checkpoints,
channels, tags, environment) can be built, inspected and tested without AWS, and so secrets in the
environment never reach a log line: :meth:`TrainingJobSpec.redacted` is what gets logged.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ConfigError
from .pricing import instance_spec

__all__ = [
    "TrainingJobSpec", "unique_job_name", "LIBRARY_TAG", "ENTRY_SCRIPT", "CHECKPOINT_LOCAL_PATH",
    "SECRET_ENV_PATTERN",
]

LIBRARY_TAG = "lensa-for-all"  # tag key on every resource we create; value: the library version
ENTRY_SCRIPT = "lensa_sagemaker_entry.py"  # our launcher, added to the source dir (see container_launcher.py)
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
SECRET_ENV_PATTERN = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
"""A quick test for secret-looking names; :func:`lensa_for_all.redaction.is_secret_name` is the full one."""
_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def unique_job_name(base: str = "lensa", *, now: float | None = None) -> str:
    """``<base>-YYYYmmdd-HHMMSS-<6 hex>``: readable, sortable by time, unique, within SageMaker's 63 chars."""
    clean = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "lensa"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    suffix = f"-{stamp}-{secrets.token_hex(3)}"
    return clean[: 63 - len(suffix)].rstrip("-") + suffix


def _str_tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def _check_name(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _NAME_RE.match(value):
        raise ConfigError(f"{attribute.name} {value!r} must be 1-63 letters, digits or hyphens")


def _check_s3(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.startswith("s3://"):
        raise ConfigError(f"{attribute.name} must be an s3:// URI, got {value!r}")


def _check_instance(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    instance_spec(value)


@attrs.frozen(kw_only=True)
class TrainingJobSpec:
    """Everything a training job needs; :meth:`to_request` gives the boto3 keyword arguments."""

    job_name: str = attrs.field(validator=_check_name)
    image_uri: str
    role_arn: str
    region: str
    source_uri: str = attrs.field(validator=_check_s3)  # s3://.../sourcedir.tar.gz
    output_uri: str = attrs.field(validator=_check_s3)  # the job writes <output_uri>/<job>/output/model.tar.gz
    checkpoint_uri: str | None = attrs.field(default=None, validator=_check_s3)
    channels: Mapping[str, str] = attrs.field(factory=dict)  # name -> s3:// prefix
    instance_type: str = attrs.field(default="ml.g5.2xlarge", validator=_check_instance)
    instance_count: int = 1
    volume_size_gb: int = 50
    max_run_s: int = 4 * 3600
    spot: bool = True
    max_wait_s: int | None = None  # spot only; default twice max_run
    entry_point: str = ENTRY_SCRIPT
    hyperparameters: Mapping[str, Any] = attrs.field(factory=dict)
    environment: Mapping[str, str] = attrs.field(factory=dict)
    tags: Mapping[str, str] = attrs.field(factory=dict)
    kms_key_id: str | None = None
    subnets: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    security_group_ids: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    def __attrs_post_init__(self) -> None:
        if "instance" not in self.channels:
            raise ConfigError("A training job needs an 'instance' channel (the prepared photos)")
        for name, uri in self.channels.items():
            if not re.match(r"^[A-Za-z0-9\.\-_]{1,64}$", name) or not str(uri).startswith("s3://"):
                raise ConfigError(f"Channel {name!r} -> {uri!r}: names are [A-Za-z0-9.-_], URIs s3://")
        if self.max_run_s <= 0 or self.volume_size_gb < 1 or self.instance_count < 1:
            raise ConfigError("max_run_s, volume_size_gb and instance_count must be positive")
        if self.spot and self.effective_max_wait_s < self.max_run_s:
            raise ConfigError(f"max_wait_s ({self.max_wait_s}) must be >= max_run_s ({self.max_run_s}) for spot jobs")
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ConfigError("VPC settings need both subnets and security_group_ids")
        if any(k.startswith("sagemaker_") for k in self.hyperparameters):
            raise ConfigError("Hyper-parameters starting with 'sagemaker_' are reserved")

    @property
    def effective_max_wait_s(self) -> int:
        return self.max_wait_s if self.max_wait_s is not None else 2 * self.max_run_s

    @property
    def gpus(self) -> int:
        return instance_spec(self.instance_type).gpus

    def encoded_hyperparameters(self) -> dict[str, str]:
        """SageMaker takes strings; like the SDK we JSON-encode each value, and the container decodes them.

        ``sagemaker_program``/``sagemaker_submit_directory`` tell the Hugging Face container's training
        toolkit which script to run from which tarball.
        """
        hps: dict[str, Any] = {
            **self.hyperparameters,
            "sagemaker_program": self.entry_point,
            "sagemaker_submit_directory": self.source_uri,
            "sagemaker_region": self.region,
            "sagemaker_container_log_level": 20,
        }
        return {k: json.dumps(v) for k, v in hps.items()}

    def to_request(self) -> dict[str, Any]:
        """The keyword arguments of ``sagemaker_client.create_training_job``."""
        channels = [
            {"ChannelName": name, "InputMode": "File", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}
            for name, uri in sorted(self.channels.items())
        ]
        resource: dict[str, Any] = {"InstanceType": self.instance_type, "InstanceCount": self.instance_count,
                                    "VolumeSizeInGB": self.volume_size_gb}
        output: dict[str, Any] = {"S3OutputPath": self.output_uri}
        if self.kms_key_id:
            resource["VolumeKmsKeyId"] = self.kms_key_id
            output["KmsKeyId"] = self.kms_key_id
        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": self.max_run_s}
        if self.spot:
            stopping["MaxWaitTimeInSeconds"] = self.effective_max_wait_s
        request: dict[str, Any] = {
            "TrainingJobName": self.job_name,
            "AlgorithmSpecification": {"TrainingImage": self.image_uri, "TrainingInputMode": "File",
                                       "EnableSageMakerMetricsTimeSeries": False},
            "RoleArn": self.role_arn,
            "InputDataConfig": channels,
            "OutputDataConfig": output,
            "ResourceConfig": resource,
            "StoppingCondition": stopping,
            "HyperParameters": self.encoded_hyperparameters(),
            "Environment": dict(self.environment),
            "EnableManagedSpotTraining": self.spot,
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(self.tags.items())],
        }
        if self.checkpoint_uri:
            request["CheckpointConfig"] = {"S3Uri": self.checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH}
        if self.subnets:
            request["VpcConfig"] = {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_group_ids)}
        return request

    def redacted(self) -> dict[str, Any]:
        """:meth:`to_request` with secret-looking environment values replaced: safe to log or print."""
        request = self.to_request()
        from ..redaction import mask_secrets

        request["Environment"] = mask_secrets(request["Environment"])
        return request

    def __repr__(self) -> str:  # never show environment values (a Hugging Face token may be there)
        return (f"TrainingJobSpec(job_name={self.job_name!r}, instance_type={self.instance_type!r}, "
                f"spot={self.spot}, channels={dict(self.channels)!r}, environment=<{len(self.environment)} vars>)")
