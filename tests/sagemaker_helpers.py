"""Test helpers for the SageMaker backend: a fast stand-in source dir, and playing the container on moto.

moto records a training job and reports ``Completed`` at once but runs nothing, so :func:`play_on_start`
makes ``backend.start`` also run the job with ``lensa_for_all.testing.sagemaker.play_training_job``.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lensa_for_all.testing.sagemaker import play_training_job
from lensa_for_all.training.progress import parse_progress_line

# A stand-in for DreamBoothTrainer's lensa_train.py, stdlib + numpy + safetensors only (fast): "trains"
# a vector from the photos' bytes for max_train_steps steps, checkpoints every step, resumes from the
# latest checkpoint, prints LENSA_PROGRESS lines (after the step's checkpoint, like the real loop).
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
        for step in range(start + 1, steps + 1):
            rng = np.random.default_rng(step)
            w = w * 0.9 + rng.standard_normal(8) * data[step % max(len(data), 1)] / 255.0
            save_file({"w": w}, str(ckpt_dir / f"step-{step:05d}.safetensors"))
            print("LENSA_PROGRESS " + json.dumps({"step": step, "total_steps": steps, "loss": float(abs(w).sum()),
                                                  "lr": None, "seconds_per_step": None, "stage": "train"}),
                  flush=True)
            if step == int(os.environ.get("FAKE_HANG_AFTER_STEP", "0")):
                import time
                time.sleep(600)  # "still training step+1" until the player kills the container
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


def _at_step(step: int | None) -> Callable[[str], bool] | None:
    """A ``kill_when`` that fires on the progress line of training step ``step`` (after its checkpoint)."""
    if step is None:
        return None

    def kill_when(line: str) -> bool:
        report = parse_progress_line(line)
        return report is not None and report.step == step and report.stage == "train"

    return kill_when


def play_on_start(backend: Any, work: Path, *, kill_at_step: int | None = None, python: str | None = None,
                  **env: str) -> list[str]:
    """Make ``backend.start`` also play the job's container (moto runs nothing); return started job names."""
    started: list[str] = []
    original = backend.start

    def start(spec: Any) -> str:
        name = original(spec)
        started.append(name)
        play_training_job(backend.aws, name, work, env=env, kill_when=_at_step(kill_at_step), python=python)
        return name

    backend.start = start
    return started
