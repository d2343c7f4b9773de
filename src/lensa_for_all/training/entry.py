"""The SageMaker training-container contract, read by the entry script of a packaged source dir.

Inputs: ``SM_CHANNEL_INSTANCE`` (photos; a job whose only channel is SageMaker's default ``training``
trains on that one), optional ``SM_CHANNEL_CLASS`` (class images),
``SM_HPS`` or ``/opt/ml/input/config/hyperparameters.json`` (values may be strings; they override
``training_config.json``), ``SM_NUM_GPUS``. Outputs: artifacts in ``SM_MODEL_DIR``, metrics in
``SM_OUTPUT_DATA_DIR``, checkpoints in ``$LENSA_CHECKPOINT_DIR`` or ``/opt/ml/checkpoints`` (resumed
from when not empty), and on failure the reason in ``$SM_OUTPUT_DIR/failure`` and a non-zero exit.
``LocalBackend`` sets the same variables to local folders, so this code runs identically in both places.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .progress import TrainingProgress, format_progress_line

__all__ = ["main", "read_hyperparameters", "ContainerPaths", "FAILURE_EXIT_CODE", "DEFAULT_HP_PATH"]

DEFAULT_HP_PATH = Path("/opt/ml/input/config/hyperparameters.json")
FAILURE_EXIT_CODE = 1


class ContainerPaths:
    """Where the contract says things are, from the environment (SageMaker defaults otherwise)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        # a job with one channel, SageMaker's default name (``estimator.fit("s3://...")``), trains on it
        instance = env.get("SM_CHANNEL_INSTANCE") or env.get("SM_CHANNEL_TRAINING")
        self.instance = Path(instance) if instance else None
        self.class_dir = Path(env["SM_CHANNEL_CLASS"]) if env.get("SM_CHANNEL_CLASS") else None
        self.model_dir = Path(env.get("SM_MODEL_DIR", "/opt/ml/model"))
        self.output_dir = Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output"))
        self.output_data_dir = Path(env.get("SM_OUTPUT_DATA_DIR", str(self.output_dir / "data")))
        self.checkpoint_dir = Path(env.get("LENSA_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
        self.num_gpus = int(env.get("SM_NUM_GPUS", "0") or 0)
        # class images survive a spot restart when cached beside the checkpoints (synced to S3)
        self.class_image_cache = Path(env.get("LENSA_CLASS_IMAGE_CACHE", str(self.checkpoint_dir / "class_images")))

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"


def read_hyperparameters(env: Mapping[str, str], hp_path: Path = DEFAULT_HP_PATH) -> dict[str, Any]:
    """Hyper-parameters from ``SM_HPS`` or the hyperparameters file, without SageMaker's own ``sagemaker_*`` keys."""
    raw: Any = {}
    if env.get("SM_HPS"):
        raw = json.loads(env["SM_HPS"])
    elif hp_path.is_file():
        raw = json.loads(hp_path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError("hyper-parameters must be a JSON object")
    return {k: v for k, v in raw.items() if not k.startswith("sagemaker_")}


def _write_failure(path: Path, exc: BaseException) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
    except OSError:  # the failure must still be reported on stderr
        pass


def _relaunch_multi_gpu(script: Path, num_gpus: int) -> int:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_gpus),
           str(script)]
    return subprocess.call(cmd)


def main(argv: Sequence[str] | None = None, *, source_dir: Path | None = None,
         env: Mapping[str, str] | None = None) -> int:
    """Run training under the container contract; return the process exit code."""
    env = dict(os.environ if env is None else env)
    paths = ContainerPaths(env)
    source_dir = source_dir or Path(__file__).resolve().parents[2]
    script = source_dir / "lensa_train.py"
    if paths.num_gpus > 1 and "LOCAL_RANK" not in env and script.is_file():
        return _relaunch_multi_gpu(script, paths.num_gpus)
    try:
        from ..config import TrainingConfig
        from ..errors import PhotoSetError
        from .loop import train

        config = TrainingConfig.from_json(source_dir / "training_config.json")
        config = config.with_hyperparameters(read_hyperparameters(env))
        if paths.instance is None or not paths.instance.is_dir():
            raise PhotoSetError("No 'instance' input channel (SM_CHANNEL_INSTANCE, or SM_CHANNEL_TRAINING for a "
                                "single-channel job): pass the prepared photos as the channel named 'instance'.")

        def progress(p: TrainingProgress) -> None:
            print(format_progress_line(p), flush=True)

        metrics = train(config, paths.instance, paths.model_dir, class_dir=paths.class_dir,
                        checkpoint_dir=paths.checkpoint_dir, progress=progress,
                        class_image_cache=paths.class_image_cache)
        paths.output_data_dir.mkdir(parents=True, exist_ok=True)
        (paths.output_data_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        return 0
    except KeyboardInterrupt:
        print("training interrupted; the newest checkpoint is kept for resuming", file=sys.stderr, flush=True)
        return 130
    except BaseException as exc:  # the container contract: reason in the failure file, non-zero exit
        traceback.print_exc()
        _write_failure(paths.failure_file, exc)
        return FAILURE_EXIT_CODE
