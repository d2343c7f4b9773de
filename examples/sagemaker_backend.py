"""Train on Amazon SageMaker: spot instance, cost estimate and limit, logs, artifacts downloaded.

Runs offline: a local moto server stands in for AWS, a tiny random model for Stable Diffusion, and
``OfflineSageMakerBackend`` (a ``SageMakerBackend`` from the test kit) plays each job's training container
on this machine (moto records jobs but runs nothing). With a real AWS account, the same code without the
stand-ins is:

    backend = SageMakerBackend(role="arn:aws:iam::123456789012:role/LensaForAllSageMakerRole",
                               instance_type="ml.g5.2xlarge", spot=True, max_cost_usd=2.0)
    trainer = DreamBoothTrainer(TrainingConfig.for_subject("person"))
    result = trainer.train(PhotoSet.from_folder("photos/me"), backend=backend, output_dir="runs/me/model")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lensa_for_all import DreamBoothTrainer, SageMakerBackend, TrainingConfig
from lensa_for_all.testing import make_photos, make_tiny_sd
from lensa_for_all.testing.sagemaker import OfflineSageMakerBackend, local_aws


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, local_aws():
        root = Path(tmp)
        base_model = make_tiny_sd(root / "tiny-sd", "tiny")
        photos = root / "photos"
        make_photos(photos, 4, size=(96, 96), kind="pet", format="png")
        config = TrainingConfig.for_subject("dog", base_model=str(base_model), resolution=64, max_train_steps=4,
                                            checkpointing_steps=2, lora_rank=4, mixed_precision="no")

        # offline only: a SageMakerBackend whose jobs' containers run here (containers_dir)
        backend: SageMakerBackend = OfflineSageMakerBackend(
            role="arn:aws:iam::123456789012:role/LensaForAllSageMakerRole", instance_type="ml.g5.2xlarge",
            spot=True, max_cost_usd=2.0, poll_interval_s=0.1, show_progress=False, containers_dir=root / "container")
        print(backend.estimate(config, num_photos=4))

        result = DreamBoothTrainer(config).train(
            photos, backend=backend, output_dir=root / "run" / "model",
            progress=lambda p: print(f"  step {p.step}/{p.total_steps}") if p.stage == "train" else None,
            on_job_started=lambda name: print("started job", name, "(re-attach with backend.attach(name))"))
        print("job:", result.job_name)
        print("artifact:", result.artifact_uri)
        print(f"cost: ${result.cost_usd:.2f}")
        assert result.output_dir is not None
        print("files:", sorted(p.name for p in result.output_dir.iterdir()))
        # later, from another process: SageMakerBackend().attach(result.job_name, "runs/me/model")


if __name__ == "__main__":
    main()
