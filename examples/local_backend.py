"""Package the training code as a SageMaker source dir and run it locally under the container contract.

This is what LocalBackend does for DreamBoothTrainer.train; a SageMakerBackend uploads the very same
folder. Runs offline with a tiny random model. Real use:

    backend = LocalBackend()
    result = backend.run(source, {"instance": Path("run/photos")}, Path("run/model"))
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lensa_for_all import DreamBoothTrainer, LocalBackend, TrainingConfig
from lensa_for_all.testing import make_photos, make_tiny_sd


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = make_tiny_sd(root / "tiny-sd", "tiny")
        photos = root / "photos"
        make_photos(photos, 4, size=(96, 96), format="png")
        config = TrainingConfig.for_subject("dog", "lora", base_model=str(base), resolution=64, max_train_steps=3,
                                            mixed_precision="no")
        source = DreamBoothTrainer(config).package_source_dir(root / "source")
        print("source dir:", sorted(p.name for p in source.iterdir()))
        print((source / "requirements.txt").read_text().strip())

        backend = LocalBackend(work_dir=root / "work")
        result = backend.run(source, {"instance": photos}, root / "model",
                             hyperparameters={"learning_rate": "5e-4"})  # strings, as SageMaker sends them
        print("model:", sorted(p.name for p in result.output_dir.iterdir()))
        print("log:", result.log_path, "| steps:", result.metrics["steps"])


if __name__ == "__main__":
    main()
