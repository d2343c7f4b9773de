"""Checkpoints are complete or invisible, and resuming falls back to the newest good one."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest

from lensa_for_all.training.checkpoints import (
    MANIFEST,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from training_helpers import make_subject_photos, tiny_config


def _parts() -> dict:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return {"model": model, "optimizer": optimizer, "lr_scheduler": scheduler, "generator": torch.Generator()}


def _save(folder: Path, step: int, parts: dict, limit: int | None = None) -> Path:
    return save_checkpoint(folder, step, trainable=dict(parts["model"].state_dict()), optimizer=parts["optimizer"],
                           lr_scheduler=parts["lr_scheduler"], generator=parts["generator"],
                           state={"losses": [1.0]}, total_limit=limit)


def test_a_checkpoint_has_a_manifest_of_every_file_written_last(tmp_path: Path) -> None:
    path = _save(tmp_path, 3, _parts())
    manifest = json.loads((path / MANIFEST).read_text())
    names = {p.name for p in path.iterdir()} - {MANIFEST}
    assert set(manifest["files"]) == names and "trainable.safetensors" in names
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size and len(entry["sha256"]) == 64
    assert verify_checkpoint(path) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("damage", "why"), [
    ("truncate", "trainable.safetensors is .* bytes, not the"),
    ("zero", "optimizer.safetensors does not match its sha256"),
    ("delete", "rng.safetensors is missing"),
    ("no-manifest", "has no manifest.json"),
], ids=["truncated", "zeroed", "deleted", "unsynced"])
def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path: Path, damage: str, why: str) -> None:
    parts = _parts()
    good = _save(tmp_path, 2, parts)
    bad = _save(tmp_path, 4, parts)
    if damage == "truncate":
        target = bad / "trainable.safetensors"
        target.write_bytes(target.read_bytes()[:20])
    elif damage == "zero":
        target = bad / "optimizer.safetensors"
        target.write_bytes(b"\0" * target.stat().st_size)
    elif damage == "delete":
        (bad / "rng.safetensors").unlink()
    else:
        (bad / MANIFEST).unlink()
    skipped: list[tuple[str, str]] = []
    assert latest_checkpoint(tmp_path, on_skip=lambda p, w: skipped.append((p.name, w))) == good
    assert skipped and skipped[0][0] == "checkpoint-000004"
    assert __import__("re").search(why, skipped[0][1])
    fresh = _parts()
    trainable, state = load_checkpoint(good, optimizer=fresh["optimizer"], lr_scheduler=fresh["lr_scheduler"],
                                       generator=fresh["generator"])
    assert state["step"] == 2 and set(trainable) == {"weight", "bias"}


def test_a_full_disk_mid_save_leaves_the_last_checkpoint_latest(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lensa_for_all.errors import DiskFullError

    parts = _parts()
    good = _save(tmp_path, 2, parts)
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the third file of the new checkpoint hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises((OSError, DiskFullError)):
        _save(tmp_path, 4, parts)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list_checkpoints(tmp_path) == [good] and latest_checkpoint(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000002"]  # no partial folder left


def test_a_partial_folder_synced_back_from_s3_is_never_resumed_and_is_cleared(tmp_path: Path) -> None:
    parts = _parts()
    good = _save(tmp_path, 2, parts)
    partial = tmp_path / ".checkpoint-000004.partial"  # what a spot reclaim mid-save can leave in S3
    partial.mkdir()
    (partial / "trainable.safetensors").write_bytes(b"half")
    half = tmp_path / "checkpoint-000006"  # a folder whose sync stopped before its manifest arrived
    half.mkdir()
    (half / "state.json").write_text('{"step": 6}')
    assert latest_checkpoint(tmp_path) == good
    _save(tmp_path, 8, parts)
    assert not partial.exists()


# -- the training loop ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subject_photos(tmp_path_factory.mktemp("photos"))


def test_training_resumes_from_the_newest_good_checkpoint_and_says_why(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, train_text_encoder=False, max_train_steps=4,
                      checkpointing_steps=1)
    train(cfg, photos, tmp_path / "out")
    ck = tmp_path / "out.checkpoints"
    assert [p.name for p in list_checkpoints(ck)][-2:] == ["checkpoint-000002", "checkpoint-000003"]
    newest = ck / "checkpoint-000003" / "trainable.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # what a spot reclaim mid-sync leaves
    with caplog.at_level(logging.WARNING, logger="lensa_for_all.training.loop"):
        metrics = train(cfg.replace(max_train_steps=5), photos, tmp_path / "out")
    assert metrics["resumed_from"].endswith("checkpoint-000002")
    assert metrics["resume_skipped"] and "checkpoint-000003: trainable.safetensors is" in metrics["resume_skipped"][0]
    assert "Not resuming from" in caplog.text and "checkpoint-000003" in caplog.text
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()


def test_a_named_damaged_checkpoint_is_a_config_error(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from lensa_for_all.errors import ConfigError
    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, train_text_encoder=False, max_train_steps=3,
                      checkpointing_steps=1)
    train(cfg, photos, tmp_path / "out")
    (tmp_path / "out.checkpoints" / "checkpoint-000002" / "optimizer.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="checkpoint-000002 is damaged.*optimizer.safetensors"):
        train(cfg.replace(resume_from="checkpoint-000002", max_train_steps=4), photos, tmp_path / "out")


def test_a_full_disk_while_training_saves_a_checkpoint_is_a_disk_full_error(
        tiny_sd: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ENOSPC from deep in save_checkpoint (the fsync of a checkpoint file), not a patched loop."""
    from lensa_for_all.errors import DiskFullError
    from lensa_for_all.training import checkpoints
    from lensa_for_all.training.loop import train

    real = checkpoints._fsync_file
    saved: list[str] = []

    def fsync_file(path: Path) -> None:
        if path.parent.name == ".checkpoint-000002.partial":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved.append(path.parent.name)
        real(path)

    monkeypatch.setattr(checkpoints, "_fsync_file", fsync_file)
    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, train_text_encoder=False, max_train_steps=3,
                      checkpointing_steps=1)
    with pytest.raises(DiskFullError, match="No space left.*resumes from the newest checkpoint"):
        train(cfg, photos, tmp_path / "out")
    ck = tmp_path / "out.checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-000001"]
    monkeypatch.setattr(checkpoints, "_fsync_file", real)
    assert train(cfg, photos, tmp_path / "out")["resumed_from"].endswith("checkpoint-000001")


@pytest.mark.slow
def test_a_checkpoint_damaged_in_s3_after_a_spot_kill_is_skipped_on_resume(aws_env: str, tiny_sd: Path,
                                                                             tmp_path: Path) -> None:
    """The real loop in a played SageMaker container: killed after step 2; the step-2 checkpoint that comes back
    from S3 is truncated (a sync cut short), so the next job resumes from step 1 and says why."""
    from lensa_for_all.backends.sagemaker import SageMakerBackend
    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.errors import TrainingJobFailed
    from lensa_for_all.training.trainer import DreamBoothTrainer
    from sagemaker_helpers import make_png_folder, play_on_start

    def backend() -> SageMakerBackend:
        b = SageMakerBackend(role="arn:aws:iam::123456789012:role/LensaForAllSageMakerRole", region="us-east-1",
                             show_progress=False, poll_interval_s=0)
        b.sleep = lambda _s: None
        return b

    config = TrainingConfig.for_subject("dog", base_model=str(tiny_sd), resolution=64, max_train_steps=4,
                                        checkpointing_steps=1, checkpoints_total_limit=3, lora_rank=4,
                                        mixed_precision="no", with_prior_preservation=False,
                                        train_text_encoder=False, seed=3)
    source = DreamBoothTrainer(config).package_source_dir(tmp_path / "src")
    photos = make_png_folder(tmp_path / "photos", count=4, size=72)
    killed = backend()
    jobs = play_on_start(killed, tmp_path / "c-kill", kill_at_step=2)

    def fail_it(parsed: dict[str, object], **_: object) -> None:
        if parsed.get("TrainingJobName") in jobs:
            parsed.update(TrainingJobStatus="Failed", FailureReason="InternalServerError: spot instance reclaimed")

    killed.aws.client("sagemaker").meta.events.register("after-call.sagemaker.DescribeTrainingJob", fail_it)
    out = tmp_path / "spot" / "model"
    with pytest.raises(TrainingJobFailed):
        killed.run(source, {"instance": photos}, out)

    s3 = killed.aws.client("s3")
    found = [(b["Name"], o["Key"]) for b in s3.list_buckets()["Buckets"]
             for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])
             if o["Key"].endswith("checkpoint-000002/trainable.safetensors")]
    assert len(found) == 1
    bucket, key = found[0]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=body[: len(body) // 2])

    resumed = backend()
    jobs2 = play_on_start(resumed, tmp_path / "c-resume")
    steps: list[int] = []
    result = resumed.run(source, {"instance": photos}, out,
                         progress=lambda p: steps.append(p.step) if p.stage == "train" else None)
    assert steps == [2, 3, 4]  # from checkpoint 1, not the damaged checkpoint 2
    log = (tmp_path / "c-resume" / jobs2[0] / "container.log").read_text()
    assert "Not resuming from" in log and "checkpoint-000002" in log and "trainable.safetensors is" in log
    assert result.output_dir is not None and (result.output_dir / "pytorch_lora_weights.safetensors").is_file()
