"""The offline demo: every stage of a real run, on CPU, in about a minute, with no download.

It builds a small random-weight Stable Diffusion model (:func:`lensa_for_all.testing.make_tiny_sd`),
copies the sample photos that ship with the package (``lensa_for_all/demo_photos``: no dev-only
package is needed, so it works from an installed wheel), and runs the :class:`~lensa_for_all.Pipeline`
for real: photo check and preparation, LoRA training with a few dozen steps (prior preservation
included) through :class:`~lensa_for_all.LocalBackend`, then a small avatar pack and its contact
sheet. The model's weights are random, so the avatars are coloured noise; the point is to see the
whole path work, the run folder it leaves, and the command to run next.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import PipelineResult
    from .pipeline.progress import RunProgress

__all__ = ["run_demo", "sample_photos", "DEMO_MODEL_SIZE", "DEMO_STEPS", "DEMO_IMAGES", "NEXT_COMMAND",
           "RANDOM_WEIGHTS_NOTICE"]

DEMO_MODEL_SIZE = "tiny"
"""``make_tiny_sd`` size: diffusers' test-sized SD at 64 px keeps the demo at about 1 minute on 2 cores
(``"small"``, SD-shaped at 128 px, takes about twice as long)."""
DEMO_RESOLUTION = 128
DEMO_STEPS = 30
DEMO_IMAGES = 6
DEMO_INFERENCE_STEPS = 6
DEFAULT_DEMO_DIR = "demo-out"

RANDOM_WEIGHTS_NOTICE = (
    "These avatars come from a small model with RANDOM weights, built on this machine so the demo needs no "
    "download and no GPU: they are coloured noise, not portraits. Every stage ran for real: the photo check "
    "and crop, LoRA training, prompt styles, generation with metadata and the contact sheet."
)
NEXT_COMMAND = "lensa-for-all run photos/me --class person --out avatars/"


def sample_photos() -> list[Path]:
    """The sample photos shipped with the package (five shots of one subject, JPEG)."""
    folder = Path(__file__).resolve().parent / "demo_photos"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")


def run_demo(out_dir: str | os.PathLike[str] = DEFAULT_DEMO_DIR, *, size: str = DEMO_MODEL_SIZE,
             steps: int = DEMO_STEPS, num_images: int = DEMO_IMAGES,
             progress: bool | RunProgress = True, **generation: Any) -> PipelineResult:
    """Run the demo into ``out_dir``: ``base-model/``, ``photos/``, ``run/`` and ``avatars/``.

    Running it again reuses what is there (the model folder and every finished stage).
    """
    from .config import TrainingConfig
    from .cpu_threads import cpu_threads_for
    from .pipeline import Pipeline
    from .testing import make_tiny_sd
    from .training.local import LocalBackend
    from .training.trainer import DreamBoothTrainer

    out = Path(out_dir)
    resolution = {"tiny": 64, "small": DEMO_RESOLUTION}.get(size)
    if resolution is None:
        from .errors import ConfigError

        raise ConfigError(f"demo model size must be 'tiny' or 'small', not {size!r}")
    base = make_tiny_sd(out / f"base-model-{size}", size).resolve()
    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for src in sample_photos():
        dest = photos / src.name
        if not dest.is_file() or dest.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dest)
    config = TrainingConfig.for_subject(
        "person", "lora", base_model=str(base), resolution=resolution, max_train_steps=steps,
        learning_rate=1e-3, text_encoder_learning_rate=5e-4, lora_rank=4, mixed_precision="no",
        num_class_images=2, class_image_inference_steps=2, class_image_batch_size=2,
    )
    # the class-image cache goes inside the demo folder, not the user's cache; the Hub is never asked
    backend = LocalBackend(env={"LENSA_CLASS_IMAGE_CACHE": str((out / "class-images").resolve()),
                                "HF_HUB_OFFLINE": "1"})
    pipeline = Pipeline(photos, trainer=DreamBoothTrainer(config), backend=backend, run_dir=out / "run",
                        progress=progress)
    generation.setdefault("num_inference_steps", DEMO_INFERENCE_STEPS)
    with cpu_threads_for(base):  # one thread for the tiny models: see benchmarks/README.md, "CPU threads"
        return pipeline.run(num_images=num_images, out_dir=out / "avatars", seed=0, **generation)
