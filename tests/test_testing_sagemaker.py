"""The offline SageMaker of the test kit: OfflineSageMakerBackend runs its jobs' containers here, on moto."""

from __future__ import annotations

from pathlib import Path

import pytest

from lensa_for_all.errors import TrainingJobFailed
from lensa_for_all.testing.sagemaker import OfflineSageMakerBackend
from sagemaker_helpers import make_fake_source_dir, make_png_folder

ROLE = "arn:aws:iam::123456789012:role/LensaForAllSageMakerRole"


def _backend(tmp_path: Path, **env: str) -> OfflineSageMakerBackend:
    backend = OfflineSageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, poll_interval_s=0,
                                      containers_dir=tmp_path / "containers", container_env=env)
    backend.sleep = lambda _s: None
    return backend


def test_jobs_run_here_and_the_real_backend_downloads_their_model(aws_env: str, tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    names: list[str] = []
    steps: list[int] = []
    result = backend.run(make_fake_source_dir(tmp_path / "src"), {"instance": make_png_folder(tmp_path / "ph")},
                         tmp_path / "model", progress=lambda p: steps.append(p.step), on_job_started=names.append)
    assert names == [result.job_name] and set(backend.played) == set(names)
    assert backend.played[names[0]].returncode == 0
    assert (tmp_path / "model" / "weights.safetensors").is_file()  # trained in the played container, via S3
    assert steps == [1, 2, 3, 4, 5, 6]  # read back from the job's CloudWatch log


def test_a_failed_container_is_a_failed_job_with_its_reason(aws_env: str, tmp_path: Path) -> None:
    backend = _backend(tmp_path, FAKE_FAIL="1")
    with pytest.raises(TrainingJobFailed, match="forced failure for the test"):
        backend.run(make_fake_source_dir(tmp_path / "src"), {"instance": make_png_folder(tmp_path / "ph")},
                    tmp_path / "model")
    assert not (tmp_path / "model" / "weights.safetensors").exists()


@pytest.mark.slow
def test_a_pipeline_on_the_offline_sagemaker_is_planned_trained_and_rendered(aws_env: str, tiny_sd: Path,
                                                                            tmp_path: Path) -> None:
    """What docs/testing.md shows an app's test doing: the whole run, SageMaker part played on moto."""
    from lensa_for_all import Pipeline
    from pipeline_helpers import copy_sample_photos

    backend = _backend(tmp_path)
    pipeline = Pipeline.from_folder(copy_sample_photos(tmp_path / "me", n=4), backend=backend,
                                    base_model=str(tiny_sd), run_dir=tmp_path / "run", progress=False, resolution=64,
                                    max_train_steps=2, lora_rank=4, mixed_precision="no",
                                    with_prior_preservation=False, train_text_encoder=False)
    plan = pipeline.plan(num_images=1)
    assert plan.backend == "sagemaker" and plan.estimate is not None  # checked as SageMaker: account, cost, ...
    result = pipeline.run(num_images=1, num_inference_steps=2, seed=1)
    assert result.backend == "sagemaker" and result.job_name in backend.played
    assert backend.played[result.job_name].returncode == 0 and len(result.avatars) == 1
