"""The packaged source dir under the SageMaker container contract, run by LocalBackend in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lensa_for_all.errors import ConfigError, PhotoSetError
from lensa_for_all.training.entry import ContainerPaths, read_hyperparameters
from lensa_for_all.training.local import LocalBackend, read_failure, run_entry_point
from lensa_for_all.training.progress import TrainingProgress
from lensa_for_all.training.trainer import DreamBoothTrainer
from training_helpers import make_subject_photos, tiny_config


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subject_photos(tmp_path_factory.mktemp("photos") / "subject")


def _generate(pipe: object) -> object:
    import torch

    image = pipe("a photo of ohwx person", num_inference_steps=2, height=64, width=64,  # type: ignore[operator]
                 generator=torch.Generator().manual_seed(0)).images[0]
    return image


def _weights_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


@pytest.mark.slow
def test_lora_end_to_end_matches_the_in_process_loop(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    """LoRA with prior preservation and text-encoder training, through LocalBackend; loads back and generates."""
    import numpy as np
    from diffusers import StableDiffusionPipeline

    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", max_train_steps=3, learning_rate=1e-2)
    assert cfg.with_prior_preservation and cfg.train_text_encoder
    cache = tmp_path / "class-cache"
    reports: list[TrainingProgress] = []
    backend = LocalBackend(env={"LENSA_CLASS_IMAGE_CACHE": str(cache)})
    result = DreamBoothTrainer(cfg, backend=backend).train(photos, output_dir=tmp_path / "model",
                                                            progress=reports.append)
    out = tmp_path / "model"
    assert result.output_dir == out and result.backend == "local"
    assert result.metrics["steps"] == 3 and result.metrics["num_class_images"] == 2
    assert result.log_path is not None and result.log_path.is_file()
    assert [r.step for r in reports if r.stage == "train"] == [1, 2, 3]
    assert {"latents", "save"} <= {r.stage for r in reports}
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "ohwx_lora_kohya.safetensors").is_file()
    assert json.loads((out / "training_config.json").read_text())["method"] == "lora"

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(out)
    assert set(pipe.get_list_adapters()) == {"unet", "text_encoder"}
    image = _generate(pipe)
    assert image.size == (64, 64) and np.asarray(image).std() > 0

    # the same config run in-process gives the very same weights and files (same thread count: float sums
    # are only bit-identical when split the same way)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, photos, tmp_path / "inproc", checkpoint_dir=tmp_path / "inproc-ck", class_image_cache=cache)
    finally:
        torch.set_num_threads(threads)
    assert _weights_equal(out / "pytorch_lora_weights.safetensors", tmp_path / "inproc" / "pytorch_lora_weights.safetensors")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "inproc").iterdir())


@pytest.mark.slow
def test_full_fine_tune_through_the_cli(tiny_sd: Path, photos: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`lensa-for-all train --method full`: prior preservation and text encoder on; a loadable pipeline folder."""
    import numpy as np
    from diffusers import StableDiffusionPipeline

    from lensa_for_all.cli.main import main

    monkeypatch.setenv("LENSA_CLASS_IMAGE_CACHE", str(tmp_path / "class-cache"))
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for p in photos.iterdir():
        (prepared / p.name).write_bytes(p.read_bytes())
    (prepared / "manifest.json").write_text(json.dumps({"photos": [{"file": p.name} for p in sorted(photos.iterdir())]}))
    out = tmp_path / "model"
    code = main(["-q", "train", str(prepared), "--class", "person", "--out", str(out), "--method", "full",
                 "--steps", "2", "--base-model", str(tiny_sd), "--resolution", "64",
                 "--set", "num_class_images=2", "--set", "class_image_inference_steps=1", "--set", "mixed_precision=no"])
    assert code == 0
    manifest = json.loads((out / "lensa_manifest.json").read_text())
    assert manifest["method"] == "full" and manifest["steps"] == 2 and manifest["train_text_encoder"]
    assert manifest["metrics"]["num_class_images"] == 2
    assert not list(out.rglob("*.bin")) and list(out.rglob("*.safetensors"))
    pipe = StableDiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    image = _generate(pipe)
    assert image.size == (64, 64) and np.asarray(image).std() > 0
    base_unet = StableDiffusionPipeline.from_pretrained(tiny_sd).unet.state_dict()
    trained = pipe.unet.state_dict()
    assert any(not bool((trained[k] == base_unet[k]).all()) for k in base_unet)


def test_failure_file_and_error_on_a_forced_error(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False)
    source = DreamBoothTrainer(cfg).package_source_dir(tmp_path / "source")
    tree = tmp_path / "opt-ml"
    code = run_entry_point(source, channels={"instance": photos}, model_dir=tree / "model",
                           output_dir=tree / "output", checkpoint_dir=tree / "checkpoints",
                           hyperparameters={"learning_rate": -1, "sagemaker_program": "lensa_train.py"})
    assert code != 0
    reason = read_failure(tree / "output")
    assert reason is not None and reason.startswith("ConfigError: TrainingConfig.learning_rate")

    code = run_entry_point(source, channels={}, model_dir=tree / "model", output_dir=tree / "output",
                           checkpoint_dir=tree / "checkpoints")
    assert code != 0 and "SM_CHANNEL_INSTANCE" in (read_failure(tree / "output") or "")

    backend = LocalBackend(work_dir=tmp_path / "work")
    with pytest.raises(ConfigError, match="learning_rate"):
        backend.run(source, {"instance": photos}, tmp_path / "model", hyperparameters={"learning_rate": "-1"})
    with pytest.raises(PhotoSetError, match="at least 3"):
        backend.run(source, {"instance": make_subject_photos(tmp_path / "one", n=1)}, tmp_path / "model")
    assert "PhotoSetError" in (tmp_path / "work" / "train.log").read_text()


def test_package_source_dir_is_self_contained(tiny_sd: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_sd, "lora", report_to="tensorboard")
    dest = DreamBoothTrainer(cfg).package_source_dir(tmp_path / "src")
    assert (dest / "lensa_train.py").is_file()
    from lensa_for_all.config import TrainingConfig

    assert TrainingConfig.from_json(dest / "training_config.json") == cfg
    reqs = (dest / "requirements.txt").read_text().splitlines()
    from importlib.metadata import version

    assert f"diffusers=={version('diffusers')}" in reqs and f"peft=={version('peft')}" in reqs
    assert any(r.startswith("tensorboard") for r in reqs) and not any(r.startswith("torch==") for r in reqs)
    assert (dest / "lensa_for_all" / "training" / "loop.py").is_file()
    assert not (dest / "lensa_for_all" / "photos").exists() and not list(dest.rglob("__pycache__"))
    # the packaged copy is the one imported, even with the installed package on the path
    code = "import lensa_for_all.training.entry as e, lensa_for_all.config as c; print(e.__file__); print(c.__file__)"
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(dest)!r}); {code}"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert all(line.startswith(str(dest)) for line in out)


def test_hyperparameters_and_paths_from_the_contract(tmp_path: Path) -> None:
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps({"max_train_steps": "7", "sagemaker_region": '"us-east-1"'}))
    assert read_hyperparameters({}, hp) == {"max_train_steps": "7"}
    assert read_hyperparameters({"SM_HPS": json.dumps({"seed": 3})}, hp) == {"seed": 3}
    assert read_hyperparameters({}, tmp_path / "absent.json") == {}
    paths = ContainerPaths({})
    assert paths.model_dir == Path("/opt/ml/model") and paths.checkpoint_dir == Path("/opt/ml/checkpoints")
    assert paths.failure_file == Path("/opt/ml/output/failure") and paths.instance is None
    paths = ContainerPaths({"SM_CHANNEL_INSTANCE": "/x", "SM_OUTPUT_DIR": "/o", "LENSA_CHECKPOINT_DIR": "/c",
                            "SM_NUM_GPUS": "2"})
    assert paths.instance == Path("/x") and paths.failure_file == Path("/o/failure") and paths.num_gpus == 2
    assert paths.class_image_cache == Path("/c/class_images")


@pytest.mark.slow
def test_ctrl_c_is_forwarded_and_the_next_run_resumes(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from lensa_for_all.training.checkpoints import list_checkpoints

    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, train_text_encoder=False, max_train_steps=20,
                      checkpointing_steps=2, checkpoints_total_limit=1)
    source = DreamBoothTrainer(cfg).package_source_dir(tmp_path / "source")
    backend = LocalBackend(work_dir=tmp_path / "work")

    def ctrl_c(p: TrainingProgress) -> None:
        if p.stage == "train" and p.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backend.run(source, {"instance": photos}, tmp_path / "model", progress=ctrl_c)
    assert "training interrupted" in (tmp_path / "work" / "train.log").read_text()  # the child stopped cleanly
    assert len(list_checkpoints(tmp_path / "work" / "checkpoints")) == 1
    assert not (tmp_path / "model" / "lensa_manifest.json").exists()

    result = backend.run(source, {"instance": photos}, tmp_path / "model")
    assert result.metrics["resumed_from"] and result.metrics["steps"] == 20
    assert (tmp_path / "model" / "pytorch_lora_weights.safetensors").is_file()


def test_progress_bar_shows_stage_step_and_loss() -> None:
    import io

    from rich.console import Console

    from lensa_for_all.training.progress import progress_bar

    out = io.StringIO()
    with progress_bar(console=Console(file=out, force_terminal=False, width=120)) as update:
        update(TrainingProgress(step=3, total_steps=10, loss=0.5, lr=1e-4, seconds_per_step=0.25))
    text = out.getvalue()
    assert "train" in text and "3/10" in text and "loss 0.5000" in text and "0.25 s/step" in text


@pytest.mark.slow
def test_relative_paths_work_from_any_working_directory(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The child runs inside the source dir, so relative paths must be resolved before it starts: a real run
    from relative paths reads the photos, trains, and writes the model and checkpoints where they were named."""
    import shutil

    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, train_text_encoder=False, max_train_steps=2,
                      checkpointing_steps=1)
    DreamBoothTrainer(cfg).package_source_dir(tmp_path / "source")
    shutil.copytree(photos, tmp_path / "pics")
    monkeypatch.chdir(tmp_path)
    code = run_entry_point("source", channels={"instance": "pics"}, model_dir="opt/model",
                           output_dir="opt/output", checkpoint_dir="opt/checkpoints")
    assert code == 0, read_failure(tmp_path / "opt" / "output")
    assert (tmp_path / "opt" / "model" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "opt" / "checkpoints" / "checkpoint-000001" / "manifest.json").is_file()
    metrics = json.loads((tmp_path / "opt" / "output" / "data" / "metrics.json").read_text())
    assert metrics["num_photos"] == len(list(photos.iterdir()))
    assert not (tmp_path / "source" / "opt").exists() and not (tmp_path / "source" / "pics").exists()
