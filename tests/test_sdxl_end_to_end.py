"""``lensa-for-all run --base-model <SDXL folder>`` end to end through LocalBackend, and the SDXL loop through
SageMakerBackend on moto with the container played locally (spot kill, resume, endpoint handler)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensa_for_all.cli.main import main
from lensa_for_all.errors import TrainingJobFailed
from lensa_for_all.generation import endpoint_handler as inference
from pipeline_helpers import copy_sample_photos
from sagemaker_helpers import make_png_folder, play_on_start

pytestmark = pytest.mark.slow

FAST_TOML = """
[training]
resolution = 64
with_prior_preservation = false
train_text_encoder = true
lora_rank = 4
mixed_precision = "no"
learning_rate = 1e-3

[generation]
num_inference_steps = 2
"""


def test_cli_run_on_an_sdxl_base_trains_exports_generates_and_reuses(
        tiny_sdxl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    for name in ("LENSA_CONFIG", "LENSA_OUT", "LENSA_BACKEND", "LENSA_RUN_DIR", "LENSA_NUM_IMAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    monkeypatch.chdir(tmp_path)
    photos = copy_sample_photos(tmp_path / "me", n=4)
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    argv = ["run", str(photos), "--class", "person", "--config", "fast.toml", "--base-model", str(tiny_sdxl),
            "--steps", "2", "-n", "2", "--styles", "corporate_headshot", "--seed", "5", "--json", "--out", "avatars"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["avatars"]) == 2 and result["backend"] == "local"
    model = Path(result["model"])
    manifest = json.loads((model / "lensa_manifest.json").read_text())
    assert manifest["model_family"] == "sdxl" and manifest["train_text_encoder"]
    assert (model / manifest["kohya_weights"]).is_file()
    for path in result["avatars"]:
        with Image.open(path) as im:
            assert im.size == (64, 64) and "Lora hashes" in im.info["parameters"]
    assert main(argv) == 0  # the same command again: every stage is reused
    assert json.loads(capsys.readouterr().out)["reused"] == ["photos", "train", "generate"]


def _backend() -> object:
    from lensa_for_all.backends.sagemaker import SageMakerBackend

    backend = SageMakerBackend(role="arn:aws:iam::123456789012:role/LensaForAllSageMakerRole", region="us-east-1",
                               show_progress=False, poll_interval_s=0)
    backend.sleep = lambda _s: None
    return backend


def test_sdxl_on_sagemaker_resumes_after_a_spot_kill_and_serves(aws_env: str, tiny_sdxl: Path,
                                                                 tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.trainer import DreamBoothTrainer

    config = TrainingConfig.for_subject("dog", base_model=str(tiny_sdxl), resolution=64, max_train_steps=4,
                                        checkpointing_steps=2, lora_rank=4, mixed_precision="no", seed=3)
    source = DreamBoothTrainer(config).package_source_dir(tmp_path / "src")
    photos = make_png_folder(tmp_path / "photos", count=4, size=72)

    ref_backend = _backend()
    play_on_start(ref_backend, tmp_path / "c-ref")
    ref = ref_backend.run(source, {"instance": photos}, tmp_path / "ref" / "model")  # type: ignore[attr-defined]

    killed_backend = _backend()
    jobs = play_on_start(killed_backend, tmp_path / "c-kill", kill_at_step=2)

    def fail_it(parsed: dict[str, object], **_: object) -> None:
        if parsed.get("TrainingJobName") in jobs:
            parsed.update(TrainingJobStatus="Failed", FailureReason="InternalServerError: spot instance reclaimed")

    killed_backend.aws.client("sagemaker").meta.events.register(  # type: ignore[attr-defined]
        "after-call.sagemaker.DescribeTrainingJob", fail_it)
    out = tmp_path / "spot" / "model"
    with pytest.raises(TrainingJobFailed, match="spot instance reclaimed"):
        killed_backend.run(source, {"instance": photos}, out)  # type: ignore[attr-defined]
    resumed_backend = _backend()
    play_on_start(resumed_backend, tmp_path / "c-resume")
    steps: list[int] = []
    resumed = resumed_backend.run(source, {"instance": photos}, out,  # type: ignore[attr-defined]
                                  progress=lambda p: steps.append(p.step) if p.stage == "train" else None)
    assert steps == [3, 4]
    a = load_file(str(ref.output_dir / "pytorch_lora_weights.safetensors"))
    b = load_file(str(resumed.output_dir / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0 and all(bool((a[k] == b[k]).all()) for k in a)
    assert json.loads((resumed.output_dir / "lensa_manifest.json").read_text())["model_family"] == "sdxl"

    model = inference.model_fn(str(resumed.output_dir))
    assert type(model.pipeline).__name__ == "StableDiffusionXLPipeline"
    body = json.dumps({"inputs": "a photo of ohwx dog", "parameters": {"num_inference_steps": 2, "seed": 1}})
    answer = json.loads(inference.output_fn(inference.predict_fn(inference.input_fn(body), model)))
    assert len(answer["images"]) == 1 and answer["parameters"]["height"] == 64
