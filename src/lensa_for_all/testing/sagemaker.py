"""The offline SageMaker for app tests: a moto server, and SageMaker's part played for its training jobs.

``local_aws()`` starts a moto server on 127.0.0.1 and points boto3 at it; :class:`OfflineSageMakerBackend`
is a ``SageMakerBackend`` whose jobs then run on this machine (``play_training_job`` plays each job's
container the moment it is created), so an app's tests drive the real backend, S3 transfers and logs
included, without AWS.

moto accepts ``CreateTrainingJob`` and reports ``Completed`` at once but runs nothing. This module does
what SageMaker's training container would, from the job's own request: download the channels, the
source tarball (extracted safely) and the checkpoints from S3, run the program named by
``sagemaker_program`` under the container contract (``SM_*`` variables, ``/opt/ml/checkpoints``), write
its output to the job's CloudWatch log stream, sync the checkpoints back, and upload ``model.tar.gz``
where the job says. Tests, the offline examples and apps' own tests use it to exercise the real
upload -> train -> download path without AWS or a GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ..archives import safe_extract
from ..backends.logs import TRAINING_LOG_GROUP
from ..backends.s3 import S3Store, S3Uri
from ..backends.sagemaker import SageMakerBackend
from ..backends.training_job import TrainingJobSpec

__all__ = ["OfflineSageMakerBackend", "PlayedJob", "play_training_job", "write_job_log", "local_aws"]


@attrs.frozen
class PlayedJob:
    """What the played container did."""

    returncode: int
    lines: tuple[str, ...]
    root: Path  # the job's fake /opt/ml: code/, input/data/<channel>/, model/, output/, checkpoints/
    killed: bool = False


def _program_and_hps(hyperparameters: Mapping[str, str]) -> tuple[str, str, dict[str, Any]]:
    decoded = {k: json.loads(v) for k, v in hyperparameters.items()}
    user = {k: v for k, v in decoded.items() if not k.startswith("sagemaker_")}
    return str(decoded["sagemaker_program"]), str(decoded["sagemaker_submit_directory"]), user


def play_training_job(session: Any, job_name: str, work_dir: Path, *, env: Mapping[str, str] | None = None,
                      kill_when: Callable[[str], bool] | None = None, upload_model: bool = True,
                      timeout_s: float = 1800, python: str | os.PathLike[str] | None = None) -> PlayedJob:
    """Run ``job_name``'s container on this machine (see the module docstring).

    ``kill_when(line)`` returning true kills the container at once, as a reclaimed spot instance
    vanishes: nothing after the kill is saved except checkpoints already written. ``python`` is the
    container's interpreter (default: this one); the container-parity tests pass a stand-in image's.
    """
    sm, s3 = session.client("sagemaker"), session.client("s3")
    account = session.account_id
    desc = sm.describe_training_job(TrainingJobName=job_name)
    program, submit_dir, user_hps = _program_and_hps(desc["HyperParameters"])
    root = Path(work_dir) / job_name
    code, model, output, ckpt = root / "code", root / "model", root / "output", root / "checkpoints"
    for d in (model, output / "data", ckpt):
        d.mkdir(parents=True, exist_ok=True)

    src = S3Uri.parse(submit_dir)
    S3Store(s3, src.bucket, owner=account).download_file(src.key, root / "sourcedir.tar.gz")
    safe_extract(root / "sourcedir.tar.gz", code)
    channel_env: dict[str, str] = {}
    for channel in desc.get("InputDataConfig", []):
        uri = S3Uri.parse(channel["DataSource"]["S3DataSource"]["S3Uri"])
        dest = root / "input" / "data" / channel["ChannelName"]
        S3Store(s3, uri.bucket, owner=account).download_prefix(uri.key, dest)
        channel_env[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = str(dest)
    ck_uri = S3Uri.parse(desc["CheckpointConfig"]["S3Uri"]) if desc.get("CheckpointConfig") else None
    if ck_uri:
        S3Store(s3, ck_uri.bucket, owner=account).download_prefix(ck_uri.key, ckpt)

    run_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SM_", "AWS_"))},
        **desc.get("Environment", {}), **channel_env,
        "SM_MODEL_DIR": str(model), "SM_OUTPUT_DIR": str(output), "SM_OUTPUT_DATA_DIR": str(output / "data"),
        "SM_CHANNELS": json.dumps(sorted(c["ChannelName"] for c in desc.get("InputDataConfig", []))),
        "SM_HPS": json.dumps(user_hps), "SM_NUM_GPUS": "0", "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": json.dumps(["algo-1"]), "LENSA_CHECKPOINT_DIR": str(ckpt), "PYTHONUNBUFFERED": "1",
        **dict(env or {}),
    }
    run_env.pop("PYTHONPATH", None)
    proc = subprocess.Popen([os.fspath(python or sys.executable), str(code / program)], cwd=code, env=run_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    killed = False
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if kill_when is not None and kill_when(line):
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the training process with it
                lines.append("(instance reclaimed)")
                break
        returncode = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    (root / "container.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_job_log(session, job_name, lines)
    if ck_uri:  # SageMaker syncs /opt/ml/checkpoints to the checkpoint URI while the job runs
        store = S3Store(s3, ck_uri.bucket, owner=account)
        for path in sorted(ckpt.rglob("*")):
            if path.is_file():
                store.upload_file(path, f"{ck_uri.key.rstrip('/')}/{path.relative_to(ckpt).as_posix()}")
    if returncode == 0 and upload_model:
        tarball = root / "model.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            for path in sorted(model.rglob("*")):
                tar.add(path, arcname=path.relative_to(model).as_posix(), recursive=False)
        artifact = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts") or (
            f"{desc['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job_name}/output/model.tar.gz")
        art = S3Uri.parse(artifact)
        S3Store(s3, art.bucket, owner=account).upload_file(tarball, art.key)
    return PlayedJob(returncode=returncode, lines=tuple(lines), root=root, killed=killed)


def write_job_log(session: Any, job_name: str, lines: list[str] | tuple[str, ...]) -> None:
    """Append ``lines`` to the job's CloudWatch stream (``<job>/algo-1-...``), as the container would."""
    logs = session.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=TRAINING_LOG_GROUP)
    stream = f"{job_name}/algo-1-1700000000"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=TRAINING_LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": line or " "} for i, line in enumerate(lines or ["(no output)"])]
    for i in range(0, len(events), 5000):
        logs.put_log_events(logGroupName=TRAINING_LOG_GROUP, logStreamName=stream, logEvents=events[i:i + 5000])


@contextlib.contextmanager
def local_aws(region: str = "us-east-1") -> Iterator[str]:
    """Start a moto server on 127.0.0.1 and point boto3 at it with fake credentials; yield its URL.

    For the offline examples and demos (needs ``moto[server]``, in the ``dev`` extra). The environment
    is restored and the server stopped on exit.
    """
    import socket

    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - moto is in the dev extra
        from ..errors import LensaError

        raise LensaError('The offline AWS stand-in needs moto: pip install "lensa-for-all[dev]"') from exc
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    settings = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": region, "AWS_REGION": region, "AWS_ENDPOINT_URL": url,
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in (*settings, "AWS_PROFILE")}
    os.environ.update(settings)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


class OfflineSageMakerBackend(SageMakerBackend):
    """A ``SageMakerBackend`` whose training jobs run on this machine: for tests under :func:`local_aws`.

    moto records ``CreateTrainingJob`` and reports ``Completed`` at once but runs nothing. This backend plays
    each job's container right after creating it (in ``containers_dir``, with ``container_env`` added to its
    environment), then follows the job like the real backend. As SageMaker does, a job whose container failed
    is reported ``Failed`` with the container's failure file as ``FailureReason``. Every other argument is
    ``SageMakerBackend``'s; ``played`` holds what each job's container did.
    """

    def __init__(self, *args: Any, containers_dir: str | os.PathLike[str],
                 container_env: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.containers_dir = Path(containers_dir)
        self.container_env = dict(container_env or {})
        self.played: dict[str, PlayedJob] = {}
        self._failures: dict[str, str] = {}
        self._reporting = False

    def start(self, spec: TrainingJobSpec) -> str:
        name = super().start(spec)
        played = play_training_job(self.aws, name, self.containers_dir, env=self.container_env or None)
        self.played[name] = played
        if played.returncode != 0:
            failure = played.root / "output" / "failure"
            text = failure.read_text(encoding="utf-8").strip() if failure.is_file() else ""
            self._failures[name] = f"AlgorithmError: {text or f'exit code {played.returncode}'}"
            self._report_failures()
        return name

    def _report_failures(self) -> None:
        """Make DescribeTrainingJob say what SageMaker would for a failed container (moto says Completed)."""
        if self._reporting:
            return
        self._reporting = True
        self.aws.client("sagemaker").meta.events.register(
            "after-call.sagemaker.DescribeTrainingJob", self._mark_failed)

    def _mark_failed(self, parsed: dict[str, Any], **_: Any) -> None:
        reason = self._failures.get(str(parsed.get("TrainingJobName")))
        if reason:
            parsed.update(TrainingJobStatus="Failed", FailureReason=reason)
