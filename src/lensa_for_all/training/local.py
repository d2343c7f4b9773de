"""Run the packaged training entry point on this machine, under the SageMaker container contract.

``run_entry_point`` is the contract player: it points ``SM_*`` variables at local folders, starts the
entry script in a subprocess (``accelerate launch`` with more than one GPU), streams its log and
progress lines, forwards Ctrl-C, and returns the exit code. :class:`LocalBackend` wraps it into the
:class:`~lensa_for_all.training.backend.Backend` interface. It is the host-side twin of ``entry.py`` and
the trainer's default place to run, so it lives with the training code. What passes here runs the same
on SageMaker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from .. import errors
from ..errors import TrainingError
from .backend import Backend, JobStartedCallback, TrainingResult
from .progress import ProgressCallback, parse_progress_line, progress_bar

__all__ = ["LocalBackend", "run_entry_point", "read_failure", "progress_bar"]

_ENTRY = "lensa_train.py"


def _count_gpus() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def run_entry_point(
    source_dir: str | os.PathLike[str],
    *,
    channels: Mapping[str, str | os.PathLike[str]],
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str],
    hyperparameters: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
    log_path: str | os.PathLike[str] | None = None,
    num_gpus: int | None = None,
    echo: IO[str] | None = None,
) -> int:
    """Run ``source_dir/lensa_train.py`` as SageMaker would; return its exit code.

    ``output_dir`` plays ``/opt/ml/output`` (the failure file lands in it, metrics in its ``data``
    folder). Hyper-parameters are stringified as SageMaker does. ``env`` adds or overrides variables.
    """
    # The child runs with cwd=source, so every path handed to it must be absolute.
    source = Path(source_dir).resolve()
    script = source / _ENTRY
    if not script.is_file():
        raise TrainingError(f"{source} is not a packaged source dir (no {_ENTRY}); write one with "
                            "DreamBoothTrainer(config).package_source_dir(dest).")
    model_dir, output_dir, checkpoint_dir = (Path(p).resolve() for p in (model_dir, output_dir, checkpoint_dir))
    for folder in (model_dir, output_dir / "data", checkpoint_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (output_dir / "failure").unlink(missing_ok=True)
    gpus = _count_gpus() if num_gpus is None else num_gpus
    hps = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (hyperparameters or {}).items()}

    child_env = dict(os.environ)
    child_env.pop("PYTHONPATH", None)  # the source dir's own lensa_for_all must be the one imported
    child_env.update({
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DIR": str(output_dir),
        "SM_OUTPUT_DATA_DIR": str(output_dir / "data"),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps(hps),
        "SM_NUM_GPUS": str(gpus),
        "LENSA_CHECKPOINT_DIR": str(checkpoint_dir),
        "PYTHONUNBUFFERED": "1",
    })
    for name, channel in channels.items():
        child_env[f"SM_CHANNEL_{name.upper()}"] = str(Path(channel).resolve())
    child_env.update(env or {})

    if gpus > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
               str(script)]
    else:
        cmd = [sys.executable, str(script)]
    log_file = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=source, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, errors="replace")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if log_file is not None:
                log_file.write(line)
                log_file.flush()
            report = parse_progress_line(line)
            if report is not None:
                if progress is not None:
                    progress(report)
            elif echo is not None:
                echo.write(line)
        return proc.wait()
    except KeyboardInterrupt:
        # forward Ctrl-C: the loop stops cleanly, the newest checkpoint stays for resuming; keep logging
        # what the child says while it stops
        proc.send_signal(signal.SIGINT)
        import threading

        def drain() -> None:
            assert proc.stdout is not None
            for rest in proc.stdout:
                if log_file is not None:
                    log_file.write(rest)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drainer.join(timeout=5)
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if log_file is not None:
            log_file.close()


def read_failure(output_dir: str | os.PathLike[str]) -> str | None:
    """The reason the entry point wrote to ``output_dir/failure``, if any."""
    path = Path(output_dir) / "failure"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _error_from_failure(reason: str, log_tail: list[str], log_path: Path | None) -> errors.LensaError:
    """Re-raise the child's own LensaError type when it names one, else a TrainingError."""
    name, _, message = reason.partition(": ")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.LensaError) and cls is not errors.TrainingJobFailed:
        try:
            return cls(message)
        except TypeError:
            pass
    where = f" Full log: {log_path}." if log_path else ""
    tail = "\n".join(log_tail[-15:])
    return TrainingError(f"Training failed: {reason}.{where}\nLast log lines:\n{tail}")


class LocalBackend(Backend):
    """Runs training on this machine in a subprocess, exactly as the SageMaker container would.

    Generated class images are cached in ``$LENSA_CLASS_IMAGE_CACHE`` (default
    ``~/.cache/lensa_for_all/class_images``) and reused by later runs. The run's working folders (checkpoints, the contract's output folder, ``train.log``) live in
    ``work_dir`` (default: ``<output_dir>.work`` beside the artifact folder); a second ``run`` with the
    same folders resumes from the newest checkpoint. ``show_progress`` draws a progress bar when no
    ``progress`` callback is given.
    """

    name = "local"

    def __init__(self, *, work_dir: str | os.PathLike[str] | None = None, num_gpus: int | None = None,
                 env: Mapping[str, str] | None = None, echo_logs: bool = False, show_progress: bool = False) -> None:
        self.show_progress = show_progress
        self.work_dir = Path(work_dir) if work_dir else None
        self.num_gpus = num_gpus
        self.env = dict(env or {})
        self.echo_logs = echo_logs

    def work_dir_for(self, output_dir: Path) -> Path:
        return self.work_dir if self.work_dir is not None else output_dir.with_name(output_dir.name + ".work")

    def run(
        self,
        source_dir: Path,
        channels: Mapping[str, Path],
        output_dir: Path,
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        on_job_started: JobStartedCallback | None = None,  # no remote job here: never called
    ) -> TrainingResult:
        output_dir = Path(output_dir)
        work = self.work_dir_for(output_dir)
        log_path = work / "train.log"
        work.mkdir(parents=True, exist_ok=True)
        tail: deque[str] = deque(maxlen=40)
        from .class_images import CACHE_ENV, default_cache_root

        env = dict(self.env)
        # generated class images are shared by every local run (the container default would keep them per run)
        env.setdefault(CACHE_ENV, str(default_cache_root()))

        class _Tail:
            def write(self, line: str) -> None:
                tail.append(line.rstrip("\n"))

        with contextlib.ExitStack() as stack:
            if progress is None and self.show_progress:
                progress = stack.enter_context(progress_bar())
            code = run_entry_point(
                source_dir, channels=channels, model_dir=output_dir, output_dir=work / "output",
                checkpoint_dir=work / "checkpoints", hyperparameters=hyperparameters, env=env,
                progress=progress, log_path=log_path, num_gpus=self.num_gpus,
                echo=sys.stderr if self.echo_logs else _Tail(),  # type: ignore[arg-type]
            )
        if code != 0:
            reason = read_failure(work / "output") or f"the entry point exited with code {code}"
            raise _error_from_failure(reason, list(tail), log_path)
        metrics: dict[str, Any] = {}
        manifest = output_dir / "lensa_manifest.json"
        if manifest.is_file():
            metrics = dict(json.loads(manifest.read_text(encoding="utf-8")).get("metrics", {}))
        return TrainingResult(output_dir=output_dir, metrics=metrics, log_path=log_path, backend=self.name)
