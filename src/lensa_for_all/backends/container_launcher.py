"""Launcher SageMaker runs first in the training container (uploaded as ``lensa_sagemaker_entry.py``).

Standard library only: it runs before anything is installed. It

1. starts the training entry point ``lensa_train.py`` (written by ``DreamBoothTrainer.package_source_dir``),
   under ``accelerate launch --multi_gpu`` (torchrun underneath) with one process per GPU when the
   instance has several, the same launch LocalBackend uses;
2. turns SIGTERM (``StopTrainingJob``, a spot reclaim notice) into SIGINT for it: the training entry point
   stops cleanly on SIGINT, keeping its newest checkpoint in ``/opt/ml/checkpoints`` for the resume;
3. reads a Hugging Face token from the encrypted S3 object whose URI ``LENSA_HF_TOKEN_S3_URI`` names (the
   backend keeps the token out of the job's environment, which ``DescribeTrainingJob`` shows) into the
   child's ``HF_TOKEN``, with the container's boto3 and the job's role;
4. after a successful run, copies the endpoint handler, its ``requirements.txt`` and the packaged
   ``lensa_for_all`` (the handler renders with ``AvatarModel``) into ``$SM_MODEL_DIR/code/``, so the
   ``model.tar.gz`` SageMaker uploads can be served by an endpoint without repacking it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

TRAIN_SCRIPT = "lensa_train.py"
INFERENCE_SCRIPT = "lensa_inference.py"  # shipped beside this file in the source dir
INFERENCE_REQUIREMENTS = "lensa_inference_requirements.txt"


def build_command(here: Path, num_gpus: int) -> list[str]:
    """The command that runs the training script: plain, or one process per GPU."""
    script = str(here / TRAIN_SCRIPT)
    if num_gpus > 1 and os.environ.get("LENSA_DISTRIBUTED", "1") != "0":
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                str(num_gpus), script]
    return [sys.executable, script]


def install_inference_code(here: Path, model_dir: Path) -> None:
    """Put the endpoint handler where the Hugging Face inference container looks for it."""
    code = model_dir / "code"
    code.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(here / INFERENCE_SCRIPT, code / "inference.py")
    requirements = here / INFERENCE_REQUIREMENTS
    if requirements.is_file():
        shutil.copyfile(requirements, code / "requirements.txt")
    package = here / "lensa_for_all"
    if package.is_dir():
        target = code / "lensa_for_all"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def child_environment(here: Path) -> dict[str, str]:
    """This process's environment, plus ``HF_TOKEN`` read from S3 when the backend stashed one there."""
    env = dict(os.environ)
    if env.get("LENSA_HF_TOKEN_S3_URI") and not env.get("HF_TOKEN"):
        sys.path.insert(0, str(here))  # the packaged lensa_for_all beside this file
        from lensa_for_all.backends.endpoint_secrets import load_hf_token

        load_hf_token(env)
        print("lensa launcher: Hugging Face token read from S3", flush=True)
    return env


def main() -> int:
    here = Path(__file__).resolve().parent
    num_gpus = int(os.environ.get("SM_NUM_GPUS", "0") or 0)
    cmd = build_command(here, num_gpus)
    print("lensa launcher: " + " ".join(cmd), flush=True)
    child = subprocess.Popen(cmd, cwd=here, env=child_environment(here))

    def forward(_signum: int, _frame: object) -> None:
        child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = child.wait()
    if rc == 0:
        install_inference_code(here, Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model")))
    return rc


if __name__ == "__main__":
    sys.exit(main())
