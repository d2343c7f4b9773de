"""``SageMakerBackend``: run the packaged training entry point as a SageMaker training job.

Plain boto3 throughout (see docs/sagemaker.md for why not the sagemaker SDK). One run's keys live under
``s3://<bucket>/<prefix>/<run_name>/``: ``input/<channel>/``, ``source/sourcedir.tar.gz``,
``checkpoints/`` and ``output/<job>/output/model.tar.gz``. Because the checkpoint prefix belongs to the
run, not the job, running again after a failure (or a spot interruption past ``max_wait``) resumes from
the last checkpoint, and unchanged inputs are not uploaded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..archives import DEFAULT_MAX_BYTES, safe_extract
from ..errors import ConfigError, CostLimitExceeded, LensaError, TrainingError, TrainingJobFailed
from ..training.backend import Backend, JobStartedCallback, TrainingResult
from ..training.progress import ProgressCallback, parse_progress_line
from ..version import __version__
from .aws_session import AWSSession, botocore_debug_muted
from .endpoint_secrets import stash_hf_token
from .images import check_image_uri, training_image_uri
from .logs import LogTail
from .pricing import CostEstimate, actual_cost, estimate_cost, instance_spec
from .s3 import S3Store, S3Uri, deterministic_tarball
from .training_job import ENTRY_SCRIPT, LIBRARY_TAG, TrainingJobSpec, unique_job_name

if TYPE_CHECKING:  # pragma: no cover
    from .endpoint import Endpoint

__all__ = ["SageMakerBackend", "TERMINAL_STATUSES"]

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff")
_BACKENDS_DIR = Path(__file__).resolve().parent
# The endpoint handler is generation code (a layer above): shipped by its path, never loaded here.
ENDPOINT_HANDLER = _BACKENDS_DIR.parent / "generation" / "endpoint_handler.py"


def inference_requirements() -> str:
    """The endpoint's ``code/requirements.txt``: the same pinned stack as the training source dir."""
    from ..stack import requirements

    return "\n".join(requirements()) + "\n"


def container_extras(tmp: Path) -> list[tuple[str, Path]]:
    """Files added beside the source dir in the uploaded tarball: the launcher SageMaker runs, and the
    endpoint handler with its requirements, which the launcher copies into the model's ``code/``."""
    req = tmp / "inference_requirements.txt"
    req.write_text(inference_requirements())
    return [(ENTRY_SCRIPT, _BACKENDS_DIR / "container_launcher.py"),
            ("lensa_inference.py", ENDPOINT_HANDLER),
            ("lensa_inference_requirements.txt", req)]


def _model_family(result: TrainingResult) -> str | None:
    """The family the trained model's manifest names (``sd1``, ``sdxl``), when its files are here."""
    manifest = result.output_dir / "lensa_manifest.json" if result.output_dir is not None else None
    if manifest is None or not manifest.is_file():
        return None
    try:
        family = json.loads(manifest.read_text(encoding="utf-8")).get("model_family")
    except (OSError, ValueError):
        return None
    return str(family) if family else None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:30] or "run"


class SageMakerBackend(Backend):
    """Train on Amazon SageMaker: spot instances, checkpoints in S3, a cost guard, logs and endpoints.

    Nothing touches AWS until :meth:`run`, :meth:`attach` or :meth:`deploy`; constructing the backend only
    validates the settings.

    Args:
        role: execution role ARN or name; found automatically when ``None`` (see ``AWSSession.resolve_role``).
        bucket: S3 bucket; default ``sagemaker-{region}-{account}``, created encrypted when missing.
        region: AWS region; default from boto3's chain (``AWS_DEFAULT_REGION``, profile).
        instance_type: a GPU training instance from ``pricing.INSTANCE_TYPES``.
        spot: managed spot training (typically 60-70% cheaper; resumes from checkpoints when reclaimed).
        max_cost_usd: refuse a launch whose estimate is over this, and stop a job that runs past it.
        run_name: the S3 folder of this run; default derived from ``output_dir`` so re-runs reuse it.
        hf_token: Hugging Face token for a private base model (default ``HF_TOKEN`` from the environment);
            passed to the job's environment, never logged.
        stop_on_interrupt: on Ctrl-C, ``True`` stops the remote job, ``False`` leaves it running,
            ``None`` asks (when there is a terminal; otherwise leaves it running).
        download: download and extract ``model.tar.gz`` into ``output_dir``; ``False`` keeps only the S3 URI.
    """

    name = "sagemaker"

    def __init__(
        self,
        role: str | None = None,
        bucket: str | None = None,
        region: str | None = None,
        instance_type: str = "ml.g5.2xlarge",
        spot: bool = True,
        max_cost_usd: float | None = None,
        *,
        profile: str | None = None,
        boto_session: Any = None,
        prefix: str = "lensa-for-all",
        run_name: str | None = None,
        image_uri: str | None = None,
        instance_count: int = 1,
        volume_size_gb: int = 50,
        max_run_s: int = 4 * 3600,
        max_wait_s: int | None = None,
        kms_key_id: str | None = None,
        environment: Mapping[str, str] | None = None,
        hf_token: str | None = None,
        subnets: tuple[str, ...] | list[str] = (),
        security_group_ids: tuple[str, ...] | list[str] = (),
        tags: Mapping[str, str] | None = None,
        stop_on_interrupt: bool | None = None,
        download: bool = True,
        max_artifact_bytes: int = DEFAULT_MAX_BYTES,
        poll_interval_s: float = 15.0,
        max_poll_interval_s: float = 60.0,
        show_progress: bool = True,
    ) -> None:
        instance_spec(instance_type)  # validate now, not after an upload
        if image_uri is not None:
            check_image_uri(image_uri, "training")
        if instance_count != 1:
            raise ConfigError("instance_count must be 1: the loop trains on one instance; for more GPUs pick a "
                              "multi-GPU instance type such as ml.g5.12xlarge (4 GPUs, one process each)")
        if max_cost_usd is not None and not max_cost_usd > 0:
            raise ConfigError(f"max_cost_usd must be a positive number of dollars, got {max_cost_usd!r}")
        if run_name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", run_name):
            raise ConfigError(f"run_name {run_name!r} must be letters, digits, '.', '_' or '-'")
        self.role = role
        self.bucket = bucket
        self.region = region
        self.instance_type = instance_type
        self.spot = spot
        self.max_cost_usd = max_cost_usd
        self.profile = profile
        self.prefix = prefix.strip("/")
        self.run_name = run_name
        self.image_uri = image_uri
        self.instance_count = instance_count
        self.volume_size_gb = volume_size_gb
        self.max_run_s = max_run_s
        self.max_wait_s = max_wait_s
        self.kms_key_id = kms_key_id
        self.environment = dict(environment or {})
        self.hf_token = hf_token
        self.subnets = tuple(subnets)
        self.security_group_ids = tuple(security_group_ids)
        self.tags = dict(tags or {})
        self.stop_on_interrupt = stop_on_interrupt
        self.download = download
        self.max_artifact_bytes = max_artifact_bytes
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max_poll_interval_s
        self.show_progress = show_progress
        self._boto_session = boto_session
        self._aws: AWSSession | None = None
        self.sleep: Callable[[float], None] = time.sleep  # replaced in tests
        self.confirm: Callable[[str], bool] = _ask_yes_no

    def __repr__(self) -> str:
        return (f"SageMakerBackend(instance_type={self.instance_type!r}, spot={self.spot}, region={self.region!r}, "
                f"bucket={self.bucket!r}, max_cost_usd={self.max_cost_usd!r})")

    # ---- AWS context -------------------------------------------------------------------------------

    @property
    def aws(self) -> AWSSession:
        """The boto3 session (created on first use)."""
        if self._aws is None:
            self._aws = AWSSession(self.region, profile=self.profile, boto_session=self._boto_session)
        return self._aws

    def _store(self, bucket: str) -> S3Store:
        return S3Store(self.aws.client("s3"), bucket, owner=self.aws.account_id, kms_key_id=self.kms_key_id)

    # ---- cost --------------------------------------------------------------------------------------

    def estimate(self, config: Any, num_photos: int) -> CostEstimate:
        """The cost estimate for ``config`` (a TrainingConfig or its dict) on this backend's instance."""
        region = self.region or (self._aws.region if self._aws else None) or _region_or_default(self._boto_session)
        return estimate_cost(config, num_photos, instance_type=self.instance_type, spot=self.spot, region=region)

    # ---- training ----------------------------------------------------------------------------------

    def run(
        self,
        source_dir: Path,
        channels: Mapping[str, Path],
        output_dir: Path,
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        on_job_started: JobStartedCallback | None = None,
    ) -> TrainingResult:
        """Upload inputs and source, run the training job, follow it, and fetch the artifacts.

        ``on_job_started(job_name)`` runs right after the job is created, before the wait, so a caller can
        record the name and :meth:`attach` to the job if this process is interrupted.
        """
        with botocore_debug_muted():
            return self._run(source_dir, channels, output_dir, hyperparameters=hyperparameters, progress=progress,
                             on_job_started=on_job_started)

    def _run(self, source_dir: Path, channels: Mapping[str, Path], output_dir: Path, *,
             hyperparameters: Mapping[str, Any] | None, progress: ProgressCallback | None,
             on_job_started: JobStartedCallback | None = None) -> TrainingResult:
        source_dir, output_dir = Path(source_dir), Path(output_dir)
        if not (source_dir / "lensa_train.py").is_file():
            raise ConfigError(f"{source_dir} is not a packaged source dir (no lensa_train.py); "
                              "write one with DreamBoothTrainer(config).package_source_dir(dest)")
        if "instance" not in channels:
            raise ConfigError("channels must include 'instance' (the prepared photos)")
        config = _read_config(source_dir, hyperparameters)
        num_photos = _count_images(Path(channels["instance"]))
        if "class" not in channels:
            cached = _cached_class_images(config)
            if cached is not None:
                self._say(f"Uploading the cached class images in {cached} instead of generating them on the GPU")
                channels = {**channels, "class": cached}
        estimate = self.estimate(config, num_photos)
        self._say(str(estimate))
        _warn_if_short_of_gpu_memory(config, self.instance_type)
        if self.max_cost_usd is not None and estimate.usd > self.max_cost_usd:
            raise CostLimitExceeded(
                f"The estimated cost ${estimate.usd:.2f} is over max_cost_usd=${self.max_cost_usd:.2f}; nothing was "
                "launched. Raise max_cost_usd, use spot=True, a cheaper instance_type, or fewer steps."
            )
        aws = self.aws
        account = aws.account_id  # proves the credentials before anything else
        role_arn = aws.resolve_role(self.role)
        bucket = aws.ensure_bucket(self.bucket, kms_key_id=self.kms_key_id)
        store = self._store(bucket)
        run_name = self.run_name or _default_run_name(output_dir)
        base = f"{self.prefix}/{run_name}" if self.prefix else run_name
        logger.info("run folder s3://%s/%s (account %s)", bucket, base, account)

        channel_uris = self._upload_channels(store, base, channels)
        source_uri = self._upload_source(store, base, source_dir)
        spec = TrainingJobSpec(
            job_name=unique_job_name(f"lensa-{run_name}"),
            image_uri=self.image_uri or training_image_uri(aws.region),
            role_arn=role_arn,
            region=aws.region,
            source_uri=str(source_uri),
            output_uri=str(store.uri(f"{base}/output")),
            checkpoint_uri=str(store.uri(f"{base}/checkpoints")),
            channels={k: str(v) for k, v in channel_uris.items()},
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            volume_size_gb=self.volume_size_gb,
            max_run_s=self.max_run_s,
            spot=self.spot,
            max_wait_s=self.max_wait_s,
            hyperparameters=dict(hyperparameters or {}),
            environment=self._job_environment(store, base),
            tags={LIBRARY_TAG: __version__, "lensa-for-all:run": run_name, **self.tags},
            kms_key_id=self.kms_key_id,
            subnets=self.subnets,
            security_group_ids=self.security_group_ids,
        )
        job_name = self.start(spec)
        if on_job_started is not None:
            on_job_started(job_name)
        return self._follow(job_name, output_dir, progress=progress, estimate=estimate)

    def start(self, spec: TrainingJobSpec) -> str:
        """Create the training job described by ``spec``; return its name. Does not wait."""
        logger.debug("CreateTrainingJob %s", json.dumps(spec.redacted(), sort_keys=True))
        sm = self.aws.client("sagemaker")
        self.aws.call(sm.create_training_job, what=f"start training job {spec.job_name}", **spec.to_request())
        self._say(f"Started training job {spec.job_name} on {spec.instance_type}"
                  f"{' (spot)' if spec.spot else ''}; re-attach with SageMakerBackend().attach({spec.job_name!r})")
        return spec.job_name

    def attach(self, job_name: str, output_dir: Path | None = None, *,
               progress: ProgressCallback | None = None) -> TrainingResult:
        """Follow a running or finished job started elsewhere; download its artifacts if ``output_dir`` is given."""
        with botocore_debug_muted():
            return self._follow(job_name, Path(output_dir) if output_dir is not None else None,
                                progress=progress, estimate=None)

    def stop(self, job_name: str) -> None:
        """Ask SageMaker to stop ``job_name``; the loop stops cleanly, its checkpoints stay in S3 for a resume."""
        self.aws.client("sagemaker").stop_training_job(TrainingJobName=job_name)
        self._say(f"Stopping training job {job_name}")

    # ---- deployment --------------------------------------------------------------------------------

    def deploy(self, artifacts: TrainingResult | str, instance_type: str = "ml.g5.xlarge", *,
               asynchronous: bool = False, endpoint_name: str | None = None, wait: bool = True,
               image_uri: str | None = None) -> Endpoint:
        """Serve trained artifacts (a result of :meth:`run` or an ``s3://.../model.tar.gz``) on an endpoint.

        Returns an :class:`~lensa_for_all.backends.endpoint.Endpoint`; use it as a context manager so the
        endpoint, its config and model are deleted when you are done (an idle endpoint bills by the hour).
        """
        from .endpoint import FAMILY_TAG, Endpoint

        if image_uri is not None:
            check_image_uri(image_uri, "inference")
        uri = artifacts.artifact_uri if isinstance(artifacts, TrainingResult) else artifacts
        if not uri or not str(uri).startswith("s3://"):
            raise ConfigError("deploy() needs an s3://.../model.tar.gz URI or a TrainingResult that has one")
        bucket = self.aws.ensure_bucket(self.bucket, kms_key_id=self.kms_key_id)
        token = self._hf_token()
        tags = dict(self.tags)
        family = _model_family(artifacts) if isinstance(artifacts, TrainingResult) else None
        if family:
            tags[FAMILY_TAG] = family
        with botocore_debug_muted():
            return Endpoint.deploy(
                self.aws, model_data_url=str(uri), role_arn=self.aws.resolve_role(self.role),
                instance_type=instance_type, asynchronous=asynchronous, name=endpoint_name, wait=wait,
                image_uri=image_uri, async_s3_uri=str(S3Uri(bucket, f"{self.prefix}/async")),
                # the token goes to an encrypted S3 object; describe_model shows only its URI
                environment=stash_hf_token(self._store(bucket), self.prefix, token) if token else None,
                tags=tags, kms_key_id=self.kms_key_id,
            )

    # ---- internals ---------------------------------------------------------------------------------

    def _hf_token(self) -> str | None:
        import os

        return self.hf_token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")

    def _job_environment(self, store: S3Store, base: str) -> dict[str, str]:
        """The job's environment. A Hugging Face token is not put in it (``DescribeTrainingJob`` shows the
        environment to anyone allowed to list jobs): it goes to an encrypted S3 object the launcher reads."""
        env = {"PYTHONUNBUFFERED": "1", "HF_HUB_ENABLE_HF_TRANSFER": "0", **self.environment}
        token = self._hf_token()
        if token:
            env.update(stash_hf_token(store, base, token))
        return env

    def _upload_channels(self, store: S3Store, base: str, channels: Mapping[str, Path]) -> dict[str, S3Uri]:
        uris: dict[str, S3Uri] = {}
        for name, path in sorted(channels.items()):
            path = Path(path)
            total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
            with _Bar(f"upload {name}", total, self.show_progress) as bar:
                report = store.sync_dir(path, f"{base}/input/{name}", on_bytes=bar.advance)
            self._say(f"channel {name}: {len(report.uploaded)} uploaded, {len(report.skipped)} unchanged, "
                      f"{len(report.deleted)} removed")
            uris[name] = store.uri(f"{base}/input/{name}/")
        return uris

    def _upload_source(self, store: S3Store, base: str, source_dir: Path) -> S3Uri:
        with tempfile.TemporaryDirectory(prefix="lensa-src-") as tmp:
            tarball = deterministic_tarball(source_dir, Path(tmp) / "sourcedir.tar.gz",
                                            extra=container_extras(Path(tmp)))
            key = f"{base}/source/sourcedir.tar.gz"
            with _Bar("upload source", tarball.stat().st_size, self.show_progress) as bar:
                uploaded = store.upload_file(tarball, key, on_bytes=bar.advance)
            self._say(f"source dir: {'uploaded' if uploaded else 'unchanged'}")
        return store.uri(key)

    def _follow(self, job_name: str, output_dir: Path | None, *, progress: ProgressCallback | None,
                estimate: CostEstimate | None) -> TrainingResult:
        try:
            desc, log_path = self._wait(job_name, output_dir, progress)
        except KeyboardInterrupt:
            self._on_interrupt(job_name)
            raise
        artifact_uri = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        cost = actual_cost(desc, region=self.aws.region)
        metrics: dict[str, Any] = {
            "training_seconds": desc.get("TrainingTimeInSeconds"),
            "billable_seconds": desc.get("BillableTimeInSeconds"),
            "estimated_usd": estimate.usd if estimate else None,
        }
        if desc.get("TrainingTimeInSeconds") and desc.get("BillableTimeInSeconds") is not None:
            metrics["spot_savings_pct"] = round(
                100 * (1 - desc["BillableTimeInSeconds"] / desc["TrainingTimeInSeconds"]), 1)
        for m in desc.get("FinalMetricDataList", []) or []:
            metrics[str(m.get("MetricName"))] = m.get("Value")
        local: Path | None = None
        if output_dir is not None and self.download and artifact_uri:
            local = self._download_artifacts(S3Uri.parse(artifact_uri), output_dir)
        if cost is not None:
            self._say(f"Job {job_name} completed; cost ${cost:.2f}")
        return TrainingResult(output_dir=local, metrics=metrics, log_path=log_path, job_name=job_name,
                              artifact_uri=artifact_uri, cost_usd=cost, backend=self.name)

    def _wait(self, job_name: str, output_dir: Path | None,
              progress: ProgressCallback | None) -> tuple[dict[str, Any], Path | None]:
        sm = self.aws.client("sagemaker")
        tail = LogTail(self.aws.client("logs"), job_name)
        log_path = (output_dir.parent / "logs" / f"{job_name}.log") if output_dir is not None else None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        interval = self.poll_interval_s
        last: tuple[str, str] | None = None
        with _Bar(f"training {job_name}", None, self.show_progress) as bar, \
                (open(log_path, "a", encoding="utf-8") if log_path else _NullWriter()) as log_file:

            def pump_logs() -> None:
                for line in tail.poll():
                    log_file.write(line + "\n")
                    report = parse_progress_line(line)
                    if report is not None:
                        bar.update(report.step, report.total_steps)
                        if progress is not None:
                            progress(report)
                    else:
                        logger.debug("[%s] %s", job_name, line)
                log_file.flush()

            while True:
                desc = self._describe(sm, job_name)
                status = str(desc["TrainingJobStatus"])
                state = (status, str(desc.get("SecondaryStatus", "")))
                if state != last:
                    message = _last_transition_message(desc)
                    self._say(f"{job_name}: {state[0]} / {state[1]}" + (f" - {message}" if message else ""))
                    last = state
                pump_logs()
                if status in TERMINAL_STATUSES:
                    break
                self._check_running_cost(job_name, desc)
                self.sleep(interval)
                interval = min(interval * 1.5, self.max_poll_interval_s)
            pump_logs()
        if status == "Failed":
            reason = str(desc.get("FailureReason", "unknown reason"))
            lines = list(tail.tail)[-20:]
            shown = "\n".join("    " + ln for ln in lines) or "    (no log lines)"
            raise TrainingJobFailed(
                f"Training job {job_name} failed: {reason}\nLast log lines:\n{shown}\n"
                f"Full log: {log_path or 'CloudWatch /aws/sagemaker/TrainingJobs'}",
                job_name=job_name, reason=reason, log_tail=lines)
        if status == "Stopped":
            cost = actual_cost(desc, region=self.aws.region)
            if self.max_cost_usd is not None and cost is not None and cost >= self.max_cost_usd:
                raise CostLimitExceeded(f"Training job {job_name} was stopped at ${cost:.2f}, over "
                                        f"max_cost_usd=${self.max_cost_usd:.2f}. Run again to resume from its "
                                        "last checkpoint with a higher limit.")
            raise TrainingError(f"Training job {job_name} was stopped before it finished. Run again with the "
                                "same run_name to resume from its last checkpoint.")
        return desc, log_path

    def _describe(self, sm: Any, job_name: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return dict(self.aws.call(sm.describe_training_job, what=f"read training job {job_name}",
                                      TrainingJobName=job_name))
        except ClientError as exc:
            if "ValidationException" in str(exc) or "not found" in str(exc).lower():
                raise LensaError(f"No training job named {job_name!r} in {self.aws.region}: {exc}") from exc
            raise

    def _check_running_cost(self, job_name: str, desc: Mapping[str, Any]) -> None:
        if self.max_cost_usd is None:
            return
        cost = actual_cost(desc, region=self.aws.region)
        if cost is not None and cost > self.max_cost_usd:
            self.stop(job_name)
            raise CostLimitExceeded(
                f"Training job {job_name} has cost about ${cost:.2f}, over max_cost_usd=${self.max_cost_usd:.2f}; "
                "it was stopped. Its checkpoints are kept: run again with a higher limit to resume."
            )

    def _on_interrupt(self, job_name: str) -> None:
        """Stop the job or leave it, and always tell the user which on stderr (whatever the verbosity):
        a paid job must never run on unseen. Without a terminal to ask, ``None`` leaves it running."""
        from .interrupt_notice import job_left_running, job_not_stopped, job_stopped

        stop = self.stop_on_interrupt
        if stop is None:
            try:
                stop = self.confirm(f"Stop the remote training job {job_name}? [y/N] ")
            except KeyboardInterrupt:  # a second Ctrl-C at the question: leave it, and say so
                stop = False
        try:
            region: str | None = self.aws.region
        except LensaError:  # no region configured: the command then relies on the user's default
            region = None
        if stop:
            try:
                self.stop(job_name)
            except Exception as exc:  # the user is leaving; say what happened and keep going
                _tell(job_not_stopped(job_name, region, exc))
            else:
                _tell(job_stopped(job_name, region))
        else:
            _tell(job_left_running(job_name, region))

    def _download_artifacts(self, uri: S3Uri, output_dir: Path) -> Path:
        store = self._store(uri.bucket)
        head = store.head(uri.key) or {}
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".lensa-dl-", dir=output_dir.parent) as tmp:
            tarball = Path(tmp) / "model.tar.gz"
            with _Bar("download model", int(head.get("ContentLength", 0)) or None, self.show_progress) as bar:
                store.download_file(uri.key, tarball, on_bytes=bar.advance)
            safe_extract(tarball, output_dir, max_bytes=self.max_artifact_bytes)
        return output_dir

    def _say(self, message: str) -> None:
        """Status for the user: logged, and printed to stderr when nothing would show the log."""
        logger.info(message)
        if self.show_progress and not logging.getLogger().hasHandlers():
            print(message, file=sys.stderr, flush=True)


# ---- module helpers --------------------------------------------------------------------------------


def _tell(message: str) -> None:
    """A message the user must see: to stderr always, whatever the verbosity (and to the debug log)."""
    logger.debug(message)
    print(message, file=sys.stderr, flush=True)


def _ask_yes_no(question: str) -> bool:
    if not sys.stdin or not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):
        return False


def _region_or_default(boto_session: Any) -> str:
    region = getattr(boto_session, "region_name", None)
    if region:
        return str(region)
    import os

    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _read_config(source_dir: Path, hyperparameters: Mapping[str, Any] | None) -> Any:
    """The job's TrainingConfig (from the source dir, with the hyper-parameters applied) for the estimate.

    A hyper-parameter the config does not know fails here, before any upload, not in the container.
    """
    path = source_dir / "training_config.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    try:
        from ..config import TrainingConfig
    except ImportError:  # pragma: no cover - the estimate then works from the raw values
        return {**data, **dict(hyperparameters or {})}
    config = TrainingConfig.from_dict(data)
    return config.with_hyperparameters(hyperparameters) if hyperparameters else config


def _cached_class_images(config: Any) -> Path | None:
    """The local class-image cache folder for ``config``, when prior preservation is on and it is complete."""
    if not getattr(config, "with_prior_preservation", False):
        return None
    try:
        from ..training.class_images import class_image_cache_key, default_cache_root
    except ImportError:  # pragma: no cover - the training extra is part of the core install
        return None
    key = class_image_cache_key(config.base_model, config.revision, config.class_prompt_text, config.resolution,
                                config.num_class_images)
    folder = default_cache_root() / key
    return folder if (folder / "key.json").is_file() else None


def _warn_if_short_of_gpu_memory(config: Any, instance_type: str) -> None:
    spec = instance_spec(instance_type)
    method = config.get("method") if isinstance(config, Mapping) else getattr(config, "method", "lora")
    saving = any(getattr(config, name, False) for name in ("gradient_checkpointing", "use_8bit_adam"))
    if method == "full" and spec.gpu_memory_gib < 24 and not saving:
        logger.warning("Full fine-tuning on %s (%d GB per GPU) may run out of memory; use an ml.g5 instance "
                       "(24 GB) or set gradient_checkpointing=True and use_8bit_adam=True.",
                       instance_type, spec.gpu_memory_gib)
    if method != "lora":
        return
    from .pricing import family_of_config

    family = family_of_config(config)
    checkpointing = bool(config.get("gradient_checkpointing") if isinstance(config, Mapping)
                         else getattr(config, "gradient_checkpointing", False))
    needs = family.lora_gpu_memory_gib
    if spec.gpu_memory_gib < needs:
        logger.warning("A %s LoRA needs about %d GB of GPU memory; %s has %d GB per GPU and may run out. Use "
                       "ml.g5.2xlarge (24 GB).", family.label, needs, instance_type, spec.gpu_memory_gib)
    elif family.lora_needs_gradient_checkpointing and not checkpointing:
        logger.warning("A %s LoRA fits %d GB only with gradient_checkpointing=True; without it %s may run out of "
                       "memory.", family.label, needs, instance_type)


def _count_images(folder: Path) -> int:
    if not folder.is_dir():
        raise ConfigError(f"Instance photos folder {folder} does not exist")
    count = sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if count == 0:
        raise ConfigError(f"No photos in {folder}; prepare them with PhotoSet first")
    return count


def _default_run_name(output_dir: Path) -> str:
    """Stable for one output folder, so a re-run reuses its inputs and checkpoints in S3."""
    resolved = output_dir.resolve()
    label = resolved.parent.name if resolved.name in ("model", "artifacts", "output") else resolved.name
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    return f"{_slug(label)}-{digest}"


def _last_transition_message(desc: Mapping[str, Any]) -> str:
    transitions = desc.get("SecondaryStatusTransitions") or []
    return str(transitions[-1].get("StatusMessage", "")) if transitions else ""


class _NullWriter:
    def __enter__(self) -> _NullWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, _text: str) -> None:
        return None

    def flush(self) -> None:
        return None


class _Bar:
    """A rich progress bar that is a no-op when progress display is off."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.progress import Progress

            self._progress = Progress(transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, amount: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def update(self, completed: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total)
