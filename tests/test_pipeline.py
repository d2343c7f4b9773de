"""Pipeline: the whole run through LocalBackend, the run folder's state, resuming, invalidation, re-attaching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lensa_for_all import Pipeline, PipelineResult
from lensa_for_all.errors import ConfigError, RunStateError
from lensa_for_all.pipeline.state import STATE_FILE, RunState
from lensa_for_all.run_lock import LOCK_FILE
from lensa_for_all.training.local import LocalBackend
from pipeline_helpers import (
    CopyTrainer,
    CountingTrainer,
    FakeRemoteBackend,
    RecordingProgress,
    copy_sample_photos,
    fast_config,
    tree_state,
)

GEN = {"num_inference_steps": 2}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return copy_sample_photos(tmp_path / "me", n=4)


def _pipeline(photos: Path, run_dir: Path, tiny_sd: Path, progress: RecordingProgress | None = None,
              **config: object) -> Pipeline:
    trainer = CopyTrainer(tiny_sd, fast_config(tiny_sd, **config))
    return Pipeline(photos, trainer=trainer, run_dir=run_dir, progress=progress or RecordingProgress())


def _pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB").tobytes()


def _prompt(path: Path) -> tuple[str, int]:
    from lensa_for_all.generation.pack import read_png_parameters

    params = read_png_parameters(path)
    return params["prompt"], params["seed"]


# ---- the whole path, for real ------------------------------------------------------------------------


@pytest.mark.slow
def test_whole_run_through_local_backend_then_rerun_reuses_everything(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from lensa_for_all.generation.pack import read_png_parameters

    trainer = CountingTrainer(fast_config(tiny_sd), backend=LocalBackend())
    progress = RecordingProgress()
    out = tmp_path / "avatars"
    pipe = Pipeline(photos, trainer=trainer, progress=progress)
    result = pipe.run(num_images=3, styles=["corporate_headshot"], out_dir=out, seed=11, **GEN)
    err = capfd.readouterr().err  # the run's own progress object got the events; the libraries' bars stayed off
    assert "Loading pipeline components" not in err and "Loading weights" not in err

    assert isinstance(result, PipelineResult) and result.run_dir == out / "run"
    assert trainer.calls == 1 and result.reused == () and result.num_photos == 4 and result.num_rejected == 0
    lora = result.run_dir / "model" / "pytorch_lora_weights.safetensors"
    assert lora.is_file() and result.model == str(result.run_dir / "model")
    assert (result.run_dir / "photos" / "manifest.json").is_file()
    assert json.loads((result.run_dir / "qc_report.json").read_text())["usable"] is True
    assert [p.parent for p in result.avatars] == [out] * 3
    for i, path in enumerate(result.avatars):
        params = read_png_parameters(path)
        assert params["seed"] == 11 + i and "ohwx person" in params["prompt"] and params["style"] == "corporate_headshot"
        with Image.open(path) as im:
            assert im.size == (64, 64)
    assert result.contact_sheet == out / "contact_sheet.jpg"
    with Image.open(result.contact_sheet) as sheet:
        assert sheet.width > 64
    assert set(result.durations) == {"photos", "train", "generate"} and all(s > 0 for s in result.durations.values())
    # progress: stages in order, every training step and every avatar reported
    assert progress.finished() == [("photos", False), ("train", False), ("generate", False)]
    assert {(e[2], e[3]) for e in progress.events if e[:2] == ("progress", "train")} >= {(1, 2), (2, 2)}
    assert [e[2] for e in progress.events if e[:2] == ("progress", "generate")] == [0, 1, 2, 3]
    # the state file records each stage: done, fingerprint, outputs, duration
    state = json.loads((result.run_dir / STATE_FILE).read_text())
    assert [state["stages"][s]["status"] for s in ("photos", "train", "generate")] == ["done"] * 3
    assert state["stages"]["train"]["outputs"]["metrics"]["steps"] == 2
    assert state["run"]["args"]["seed"] == 11

    # the same command again: nothing is redone, nothing is rewritten
    before = tree_state(tmp_path)
    again = Pipeline(photos, trainer=trainer, progress=RecordingProgress()).run(
        num_images=3, styles=["corporate_headshot"], out_dir=out, seed=11, **GEN)
    assert trainer.calls == 1 and again.reused == ("photos", "train", "generate")
    assert again.avatars == result.avatars and again.durations == result.durations
    after = tree_state(tmp_path)
    assert {k: v for k, v in after.items() if not k.endswith((STATE_FILE, LOCK_FILE))} == \
        {k: v for k, v in before.items() if not k.endswith((STATE_FILE, LOCK_FILE))}

    # resume() rebuilds the pipeline from the state alone and finds everything done
    resumed = Pipeline.resume(result.run_dir, progress=False)
    assert resumed.reused == ("photos", "train", "generate") and resumed.avatars == result.avatars


# ---- resuming ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_crash_during_generation_resumes_without_retraining_and_keeps_finished_avatars(
        tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pipe = _pipeline(photos, run_dir, tiny_sd, RecordingProgress(interrupt_at=("generate", 2)))
    with pytest.raises(KeyboardInterrupt):
        pipe.run(num_images=4, out_dir=tmp_path / "out", batch_size=1, **GEN)
    out = tmp_path / "out"
    kept = sorted(out.glob("*.png"))
    assert len(kept) == 2
    state = RunState.load(run_dir)
    assert state.stage("train")["status"] == "done" and state.stage("generate")["status"] == "started"
    model_before, kept_before = tree_state(run_dir / "model"), tree_state(out)

    progress = RecordingProgress()
    trainer = pipe.trainer
    again = Pipeline(photos, trainer=trainer, run_dir=run_dir, progress=progress).run(
        num_images=4, out_dir=out, batch_size=1, **GEN)
    assert len(trainer.calls) == 1  # type: ignore[attr-defined]  # trained once, not again
    assert tree_state(run_dir / "model") == model_before
    assert again.reused == ("photos", "train")
    assert len(again.avatars) == 4 and again.avatars[:2] == tuple(kept)
    for name, stat in kept_before.items():
        if name.endswith(".png"):
            assert tree_state(out)[name] == stat  # the finished avatars were not rendered again
    assert [e[2] for e in progress.events if e[:2] == ("progress", "generate")] == [2, 3, 4]
    assert any("Keeping the 2 avatars" in e[1] for e in progress.events if e[0] == "message")
    # the resumed pack is the pack an uninterrupted run makes: same seeds, prompts and pixels
    index = json.loads((out / "avatars.json").read_text())
    assert index["contact_sheet"] == "contact_sheet.jpg" and len(index["avatars"]) == 4
    seed = state.stage("generate")["progress"]["seed"]
    assert [a["seed"] for a in index["avatars"]] == [seed, seed + 1, seed + 2, seed + 3]
    # (one image per call: an image rendered in a batch depends on its batch companions)
    fresh = _pipeline(photos, tmp_path / "run2", tiny_sd).run(num_images=4, out_dir=tmp_path / "out2", seed=seed,
                                                              batch_size=1, **GEN)
    assert [_pixels(p) for p in fresh.avatars] == [_pixels(p) for p in again.avatars]
    assert [_prompt(p) for p in fresh.avatars] == [_prompt(p) for p in again.avatars]


@pytest.mark.parametrize("prompts", ["catalogue", "list", "generator"])
def test_resume_continues_an_interrupted_run_from_its_state(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                            prompts: str) -> None:
    from lensa_for_all.prompts import Prompt, PromptGenerator

    run_dir = tmp_path / "run"
    given = {"catalogue": None, "list": ["ohwx person as a knight", Prompt("ohwx person on the moon", style="moon")],
             "generator": PromptGenerator("ohwx", "person", styles=["sci-fi"])}[prompts]
    pipe = Pipeline(photos, trainer=CopyTrainer(tiny_sd, fast_config(tiny_sd)), prompts=given, run_dir=run_dir,
                    progress=RecordingProgress(interrupt_at=("generate", 1)))
    with pytest.raises(KeyboardInterrupt):
        pipe.run(num_images=2, styles=["fantasy"] if given is None else None, **GEN)
    first = sorted((run_dir / "avatars").glob("*.png"))
    assert len(first) == 1
    progress = RecordingProgress()
    result = Pipeline.resume(run_dir, progress=progress)  # no photos, config, prompts or settings passed again
    assert result.out_dir == run_dir / "avatars" and len(result.avatars) == 2 and result.avatars[0] == first[0]
    assert result.reused == ("photos", "train")
    assert any("Keeping the 1 avatars" in e[1] for e in progress.events if e[0] == "message")
    texts = [_prompt(p)[0] for p in result.avatars]
    # mixed styles render in batches grouped by settings, out of order: each file still sits at its own index
    base = RunState.load(run_dir).stage("generate")["outputs"]["seed"]
    assert [_prompt(p)[1] for p in result.avatars] == [base, base + 1]
    assert [int(p.name.split("-")[0]) for p in result.avatars] == [0, 1]
    if prompts == "list":
        assert texts == ["ohwx person as a knight", "ohwx person on the moon"]
    else:
        recorded = RunState.load(run_dir).stage("generate")["progress"]["prompts"]
        assert texts == [p["text"] for p in recorded]


# ---- invalidation --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_changed_inputs_rerun_their_stage_and_what_follows(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from lensa_for_all.demo import sample_photos

    run_dir, out = tmp_path / "run", tmp_path / "out"
    pipe = _pipeline(photos, run_dir, tiny_sd)
    first = pipe.run(num_images=2, out_dir=out, seed=1, **GEN)
    trainer = pipe.trainer
    (run_dir / "model.work" / "checkpoints").mkdir(parents=True)
    (run_dir / "model.work" / "checkpoints" / "stale.safetensors").write_bytes(b"old")

    # generation settings only: photos and model reused, the old avatars replaced
    progress = RecordingProgress()
    second = Pipeline(photos, trainer=trainer, run_dir=run_dir, progress=progress).run(
        num_images=3, out_dir=out, seed=1, **GEN)
    assert second.reused == ("photos", "train") and len(trainer.calls) == 1  # type: ignore[attr-defined]
    # catalogue styles with their own settings render in batches out of order; each avatar keeps its index
    assert [(int(p.name.split("-")[0]), _prompt(p)[1]) for p in second.avatars] == [(0, 1), (1, 2), (2, 3)]
    assert len(list(out.glob("*.png"))) == 3 and len(json.loads((out / "avatars.json").read_text())["avatars"]) == 3

    # a training setting: photos reused, training redone from scratch (stale checkpoints removed)
    trainer2 = CopyTrainer(tiny_sd, fast_config(tiny_sd, max_train_steps=3))
    third = Pipeline(photos, trainer=trainer2, run_dir=run_dir, progress=RecordingProgress()).run(
        num_images=3, out_dir=out, seed=1, **GEN)
    assert third.reused == ("photos",) and len(trainer2.calls) == 1
    assert not (run_dir / "model.work" / "checkpoints" / "stale.safetensors").exists()

    # a photo replaced by another one: everything runs again
    victim = sorted(photos.glob("*.jpg"))[0]
    victim.unlink()
    shutil.copyfile(sample_photos()[4], photos / sample_photos()[4].name)
    fourth = Pipeline(photos, trainer=trainer2, run_dir=run_dir, progress=RecordingProgress()).run(
        num_images=3, out_dir=out, seed=1, **GEN)
    assert fourth.reused == () and len(trainer2.calls) == 2
    manifest = json.loads((run_dir / "photos" / "manifest.json").read_text())
    assert victim.name not in {Path(e["source"]).name for e in manifest["photos"]}
    assert first.avatars[0].name != "" and len(list(out.glob("*.png"))) == 3


def test_run_folder_with_foreign_files_and_corrupt_state_are_refused(tiny_sd: Path, photos: Path,
                                                                     tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    with pytest.raises(RunStateError, match="no run state"):
        _pipeline(photos, run_dir, tiny_sd).run(num_images=1, **GEN)
    (run_dir / STATE_FILE).write_text("{not json")
    with pytest.raises(RunStateError, match="corrupt"):
        _pipeline(photos, run_dir, tiny_sd).run(num_images=1, **GEN)
    with pytest.raises(RunStateError, match="not a lensa-for-all run folder"):
        Pipeline.resume(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="unknown setting"):
        _pipeline(photos, tmp_path / "r2", tiny_sd).run(num_images=1, sampler="euler")
    with pytest.raises(ConfigError, match="backend"):
        Pipeline(photos, backend="gpu-cluster")


def test_too_few_photos_stop_the_run_with_the_report_in_the_run_folder(tiny_sd: Path, tmp_path: Path) -> None:
    from lensa_for_all.errors import TooFewPhotosError

    few = copy_sample_photos(tmp_path / "few", n=2)
    (few / "notes.txt").write_text("not a photo")
    with pytest.raises(TooFewPhotosError):
        _pipeline(few, tmp_path / "run", tiny_sd).run(num_images=1, **GEN)
    report = json.loads((tmp_path / "run" / "qc_report.json").read_text())
    assert report["usable"] is False and any(f["path"].endswith("notes.txt") for f in report["files"])


def test_sagemaker_backend_is_built_from_settings_with_a_run_name_per_training_set(photos: Path) -> None:
    from lensa_for_all.backends.sagemaker import SageMakerBackend

    pipe = Pipeline.from_folder(photos, backend="sagemaker", progress=False,
                                sagemaker={"instance_type": "ml.g5.xlarge", "max_cost_usd": 2.0, "spot": False})
    backend = pipe.backend_for(run_name="me-0123456789")
    assert isinstance(backend, SageMakerBackend) and pipe.backend_name == "sagemaker"
    assert (backend.instance_type, backend.max_cost_usd, backend.spot, backend.run_name) == \
        ("ml.g5.xlarge", 2.0, False, "me-0123456789")
    assert backend.show_progress is False  # the pipeline draws the progress
    with pytest.raises(ConfigError, match="invalid SageMaker setting"):
        Pipeline.from_folder(photos, backend="sagemaker", sagemaker={"instanc_type": "x"}).backend_for()


# ---- re-attaching to a remote job ----------------------------------------------------------------------


def test_crash_during_a_remote_job_reattaches_to_it_instead_of_launching_another(
        tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from lensa_for_all.training.trainer import DreamBoothTrainer

    backend = FakeRemoteBackend(tiny_sd)
    run_dir = tmp_path / "run"
    trainer = DreamBoothTrainer(fast_config(tiny_sd))
    with pytest.raises(KeyboardInterrupt):
        Pipeline(photos, trainer=trainer, backend=backend, run_dir=run_dir, progress=False).run(num_images=1, **GEN)
    assert backend.started == ["job-1"]
    assert RunState.load(run_dir).stage("train")["progress"]["job_name"] == "job-1"  # recorded at launch

    progress = RecordingProgress()
    result = Pipeline(photos, trainer=trainer, backend=backend, run_dir=run_dir, progress=progress).run(
        num_images=1, **GEN)
    assert backend.started == ["job-1"] and backend.attached == ["job-1"]  # no second job
    assert result.job_name == "job-1" and result.cost_usd == pytest.approx(0.12) and len(result.avatars) == 1
    assert any("Re-attaching to training job job-1" in e[1] for e in progress.events if e[0] == "message")
    assert "$0.12" in result.summary() and "job-1" in result.summary()


@pytest.mark.slow
def test_sagemaker_job_is_reattached_from_the_state_on_moto(aws_env: str, tiny_sd: Path, photos: Path,
                                                            tmp_path: Path) -> None:
    """The real SageMakerBackend on moto: the run dies while following the job; the next run attaches to it."""
    import boto3

    from lensa_for_all.backends.s3 import deterministic_tarball
    from lensa_for_all.backends.sagemaker import SageMakerBackend
    from lensa_for_all.training.trainer import DreamBoothTrainer

    backend = SageMakerBackend(role="arn:aws:iam::123456789012:role/LensaForAllSageMakerRole", region="us-east-1",
                               show_progress=False, poll_interval_s=0, stop_on_interrupt=False)
    backend.sleep = lambda _s: None
    artifact = deterministic_tarball(tiny_sd, tmp_path / "model.tar.gz")
    original_start = backend.start

    def start_and_publish(spec: object) -> str:  # moto runs nothing: publish the job's artifact ourselves
        name = original_start(spec)  # type: ignore[arg-type]
        desc = backend.aws.client("sagemaker").describe_training_job(TrainingJobName=name)
        uri = desc["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://")
        bucket, key = uri.split("/", 1)
        backend.aws.client("s3").upload_file(str(artifact), bucket, key)
        return name

    backend.start = start_and_publish  # type: ignore[method-assign]
    calls = {"n": 0}

    def die_while_following(**_: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first describe is start_and_publish's own; the second is the backend following
            raise KeyboardInterrupt

    sm = backend.aws.client("sagemaker")
    sm.meta.events.register("before-call.sagemaker.DescribeTrainingJob", die_while_following)
    run_dir = tmp_path / "run"
    trainer = DreamBoothTrainer(fast_config(tiny_sd))
    with pytest.raises(KeyboardInterrupt):
        Pipeline(photos, trainer=trainer, backend=backend, run_dir=run_dir, progress=False).run(num_images=1, **GEN)
    job = RunState.load(run_dir).stage("train")["progress"]["job_name"]
    assert job.startswith("lensa-")

    result = Pipeline(photos, trainer=trainer, backend=backend, run_dir=run_dir, progress=False).run(
        num_images=1, **GEN)
    jobs = boto3.client("sagemaker", region_name="us-east-1").list_training_jobs()["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in jobs] == [job]  # attached, not launched again
    assert result.job_name == job and result.backend == "sagemaker" and result.cost_usd is not None
    assert (run_dir / "model" / "model_index.json").is_file() and len(result.avatars) == 1
