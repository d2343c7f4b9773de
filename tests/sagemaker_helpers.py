"""Test helpers for the SageMaker backend: a stand-in source dir and "playing the container" on moto.

moto records a training job and reports ``Completed`` at once but runs nothing, so
:func:`play_container` does what SageMaker would: it reads the job's request back from the API,
downloads the channels, the source tarball and the checkpoints from (moto's) S3, runs the program the
job names under the training-container contract, syncs checkpoints back and uploads ``model.tar.gz``
where the job says.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lensa_for_all.archives import safe_extract
from lensa_for_all.backends.s3 import S3Store, S3Uri

# A stand-in for DreamBoothTrainer's lensa_train.py, stdlib + numpy + safetensors only (fast): "trains"
# a vector from the photos' bytes for max_train_steps steps, checkpoints every step, resumes from the
# latest checkpoint, prints LENSA_PROGRESS lines, and can be told to die mid-run (a spot reclaim).
FAKE_TRAIN_SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import numpy as np
    from safetensors.numpy import save_file, load_file

    def main():
        hps = json.loads(os.environ.get("SM_HPS", "{}"))
        config = json.loads((Path(__file__).parent / "training_config.json").read_text())
        config.update({k: json.loads(v) if isinstance(v, str) else v for k, v in hps.items()})
        steps = int(config.get("max_train_steps") or 6)
        if os.environ.get("FAKE_FAIL"):
            out = Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"))
            out.mkdir(parents=True, exist_ok=True)
            (out / "failure").write_text("forced failure for the test")
            print("about to fail", flush=True)
            return 1
        photos = sorted(Path(os.environ["SM_CHANNEL_INSTANCE"]).glob("*.png"))
        data = np.frombuffer(b"".join(p.read_bytes() for p in photos), dtype=np.uint8).astype(np.float64)
        ckpt_dir = Path(os.environ.get("LENSA_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        w, start = np.zeros(8), 0
        ckpts = sorted(ckpt_dir.glob("step-*.safetensors"))
        if ckpts:
            w = load_file(str(ckpts[-1]))["w"]
            start = int(ckpts[-1].stem.split("-")[1])
            print(f"resumed from step {start}", flush=True)
        die_at = int(os.environ.get("FAKE_DIE_AT_STEP", "0"))
        for step in range(start + 1, steps + 1):
            rng = np.random.default_rng(step)
            w = w * 0.9 + rng.standard_normal(8) * data[step % max(len(data), 1)] / 255.0
            save_file({"w": w}, str(ckpt_dir / f"step-{step:05d}.safetensors"))
            print("LENSA_PROGRESS " + json.dumps({"step": step, "total_steps": steps, "loss": float(abs(w).sum()),
                                                  "lr": None, "seconds_per_step": None, "stage": "train"}),
                  flush=True)
            if step == die_at:
                print("instance reclaimed", flush=True)
                return 143
        model_dir = Path(os.environ["SM_MODEL_DIR"])
        model_dir.mkdir(parents=True, exist_ok=True)
        save_file({"w": w}, str(model_dir / "weights.safetensors"))
        (model_dir / "lensa_manifest.json").write_text(json.dumps({"method": "fake", "steps": steps}))
        return 0

    if __name__ == "__main__":
        sys.exit(main())
''')


def make_fake_source_dir(dest: Path, config: Mapping[str, Any] | None = None) -> Path:
    """A packaged source dir with the layout ``package_source_dir`` writes, running the fake loop."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "lensa_train.py").write_text(FAKE_TRAIN_SCRIPT)
    (dest / "requirements.txt").write_text("\n")
    (dest / "lensa_for_all").mkdir(exist_ok=True)
    (dest / "lensa_for_all" / "__init__.py").write_text("")
    (dest / "training_config.json").write_text(json.dumps(dict(config or {"max_train_steps": 6})))
    return dest


def make_png_folder(dest: Path, count: int = 4, size: int = 16, seed: int = 0) -> Path:
    """``count`` small deterministic PNGs."""
    import numpy as np
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(dest / f"photo_{i:02d}.png")
    return dest


def _decode_hps(hps: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    decoded = {k: json.loads(v) for k, v in hps.items()}
    user = {k: v for k, v in decoded.items() if not k.startswith("sagemaker_")}
    framework = {k: v for k, v in decoded.items() if k.startswith("sagemaker_")}
    return user, framework


def play_container(session: Any, job_name: str, work: Path, *, env: Mapping[str, str] | None = None,
                   upload_model: bool = True, kill_at_step: int | None = None) -> int:
    """Run ``job_name`` the way SageMaker's training container would; return the program's exit code."""
    sm, s3 = session.client("sagemaker"), session.client("s3")
    account = session.account_id
    desc = sm.describe_training_job(TrainingJobName=job_name)
    user_hps, fw = _decode_hps(desc["HyperParameters"])
    root = work / job_name
    code, model, output, ckpt = root / "code", root / "model", root / "output", root / "checkpoints"
    for d in (model, output, ckpt):
        d.mkdir(parents=True, exist_ok=True)
    # source tarball (safe extraction: it came from a bucket)
    src = S3Uri.parse(fw["sagemaker_submit_directory"])
    src_store = S3Store(s3, src.bucket, owner=account)
    src_store.download_file(src.key, root / "sourcedir.tar.gz")
    safe_extract(root / "sourcedir.tar.gz", code)
    channel_env = {}
    for ch in desc["InputDataConfig"]:
        uri = S3Uri.parse(ch["DataSource"]["S3DataSource"]["S3Uri"])
        dest = root / "input" / "data" / ch["ChannelName"]
        S3Store(s3, uri.bucket, owner=account).download_prefix(uri.key, dest)
        channel_env[f"SM_CHANNEL_{ch['ChannelName'].upper()}"] = str(dest)
    ck_uri = S3Uri.parse(desc["CheckpointConfig"]["S3Uri"]) if desc.get("CheckpointConfig") else None
    if ck_uri:
        S3Store(s3, ck_uri.bucket, owner=account).download_prefix(ck_uri.key, ckpt)
    run_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SM_", "AWS_"))},
        **desc.get("Environment", {}), **channel_env,
        "SM_MODEL_DIR": str(model), "SM_OUTPUT_DIR": str(output), "SM_OUTPUT_DATA_DIR": str(output / "data"),
        "SM_HPS": json.dumps(user_hps), "SM_NUM_GPUS": "0", "SM_CURRENT_HOST": "algo-1",
        "LENSA_CHECKPOINT_DIR": str(ckpt), **dict(env or {}),
    }
    proc = subprocess.Popen([sys.executable, str(code / fw["sagemaker_program"])], cwd=code, env=run_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if kill_at_step is not None and line.startswith("LENSA_PROGRESS "):
            report = json.loads(line[len("LENSA_PROGRESS "):])
            if report["step"] == kill_at_step and report.get("stage", "train") == "train":
                lines.append("instance reclaimed")
                _kill_tree(proc.pid)
                break
    returncode = proc.wait(timeout=600)
    (root / "container.log").write_text("\n".join(lines) + "\n")
    put_log_lines(session, job_name, lines or ["(no output)"])
    if ck_uri:  # SageMaker syncs /opt/ml/checkpoints to S3 continuously
        store = S3Store(s3, ck_uri.bucket, owner=account)
        for path in sorted(ckpt.rglob("*")):
            if path.is_file():
                store.upload_file(path, f"{ck_uri.key.rstrip('/')}/{path.relative_to(ckpt).as_posix()}")
    if returncode == 0 and upload_model:
        tarball = root / "model.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            for path in sorted(model.rglob("*")):
                tar.add(path, arcname=path.relative_to(model).as_posix(), recursive=False)
        art = S3Uri.parse(desc["ModelArtifacts"]["S3ModelArtifacts"])
        S3Store(s3, art.bucket, owner=account).upload_file(tarball, art.key)
    return returncode


def _kill_tree(pid: int) -> None:
    """SIGKILL the launcher and the training process it started (a reclaimed instance just vanishes)."""
    import signal

    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    for child in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def put_log_lines(session: Any, job_name: str, lines: list[str]) -> None:
    """Write ``lines`` to the job's CloudWatch stream as the container would."""
    import time

    logs = session.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    stream = f"{job_name}/algo-1-1700000000"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": line or " "} for i, line in enumerate(lines)])


def play_on_start(backend: Any, work: Path, *, kill_at_step: int | None = None, **env: str) -> list[str]:
    """Make ``backend.start`` also play the job's container (moto runs nothing); return started job names."""
    started: list[str] = []
    original = backend.start

    def start(spec: Any) -> str:
        name = original(spec)
        started.append(name)
        play_container(backend.aws, name, work, env=env, kill_at_step=kill_at_step)
        return name

    backend.start = start
    return started
