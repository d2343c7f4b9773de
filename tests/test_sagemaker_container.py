"""The real packaged training loop through SageMakerBackend on moto, the container played locally.

``DreamBoothTrainer.package_source_dir`` writes the source dir; the backend uploads it with our launcher;
the played container runs the launcher, which runs ``lensa_train.py`` on the tiny model. Then the
artifact is served by the endpoint handler, and a run killed mid-way (a reclaimed spot instance)
resumes from its S3 checkpoints to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensa_for_all.backends.sagemaker import SageMakerBackend
from lensa_for_all.errors import TrainingJobFailed
from lensa_for_all.generation import endpoint_handler
from sagemaker_helpers import make_png_folder, play_on_start

ROLE = "arn:aws:iam::123456789012:role/LensaForAllSageMakerRole"


def _backend() -> SageMakerBackend:
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, poll_interval_s=0)
    backend.sleep = lambda _s: None
    return backend


@pytest.mark.slow
def test_real_loop_trains_resumes_after_spot_kill_and_serves(aws_env: str, tiny_sd: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.trainer import DreamBoothTrainer

    config = TrainingConfig.for_subject("dog", base_model=str(tiny_sd), resolution=64, max_train_steps=4,
                                        checkpointing_steps=2, lora_rank=4, mixed_precision="no", seed=3)
    source = DreamBoothTrainer(config).package_source_dir(tmp_path / "src")
    photos = make_png_folder(tmp_path / "photos", count=4, size=72)

    # 1. uninterrupted
    ref_backend = _backend()
    play_on_start(ref_backend, tmp_path / "c-ref")
    steps: list[int] = []
    ref = ref_backend.run(source, {"instance": photos}, tmp_path / "ref" / "model",
                          progress=lambda p: steps.append(p.step) if p.stage == "train" else None)
    assert steps == [1, 2, 3, 4]
    assert ref.output_dir is not None
    manifest = json.loads((ref.output_dir / "lensa_manifest.json").read_text())
    assert manifest["method"] == "lora" and manifest["base_model"] == str(tiny_sd)
    assert (ref.output_dir / "code" / "inference.py").is_file()

    # 2. killed right after the step-2 checkpoint; SageMaker then reports the job failed
    killed_backend = _backend()
    jobs = play_on_start(killed_backend, tmp_path / "c-kill", kill_at_step=2)

    def fail_it(parsed: dict[str, object], **_: object) -> None:
        if parsed.get("TrainingJobName") in jobs:
            parsed.update(TrainingJobStatus="Failed", FailureReason="InternalServerError: spot instance reclaimed")

    killed_backend.aws.client("sagemaker").meta.events.register("after-call.sagemaker.DescribeTrainingJob",
                                                                fail_it)
    out = tmp_path / "spot" / "model"
    with pytest.raises(TrainingJobFailed, match="spot instance reclaimed"):
        killed_backend.run(source, {"instance": photos}, out)

    # 3. the re-run uses the same S3 checkpoint prefix and finishes steps 3-4 only
    resumed_backend = _backend()
    play_on_start(resumed_backend, tmp_path / "c-resume")
    resumed_steps: list[int] = []
    resumed = resumed_backend.run(source, {"instance": photos}, out,
                                  progress=lambda p: resumed_steps.append(p.step) if p.stage == "train" else None)
    assert resumed_steps == [3, 4]
    assert resumed.output_dir is not None
    a = load_file(str(ref.output_dir / "pytorch_lora_weights.safetensors"))
    b = load_file(str(resumed.output_dir / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(bool((a[k] == b[k]).all()) for k in a)

    # 4. the artifact is what an endpoint serves: the handler loads the LoRA on its base model
    model = endpoint_handler.model_fn(str(resumed.output_dir))
    body = json.dumps({"inputs": "a photo of ohwx dog", "parameters": {"num_inference_steps": 2, "seed": 1}})
    answer = json.loads(endpoint_handler.output_fn(endpoint_handler.predict_fn(endpoint_handler.input_fn(body), model)))
    assert len(answer["images"]) == 1 and answer["seeds"] == [1] and answer["parameters"]["height"] == 64
