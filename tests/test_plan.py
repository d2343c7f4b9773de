"""The plan: every check a run needs happens first, fails in seconds and writes nothing into the run folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lensa_for_all import Pipeline
from lensa_for_all.cli.main import EXIT_ERROR, EXIT_USAGE, main
from lensa_for_all.errors import CostLimitExceeded, ModelNotFoundError, UsageError
from pipeline_helpers import copy_sample_photos


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LENSA_CONFIG", "LENSA_OUT", "LENSA_BACKEND", "LENSA_RUN_DIR", "LENSA_NUM_IMAGES", "LENSA_REGION",
                 "LENSA_MAX_COST_USD", "LENSA_PROFILE", "LENSA_ROLE", "LENSA_BUCKET", "LENSA_CLASS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No region, no credentials, no config files: what a machine without AWS set up looks like."""
    import os

    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "LENSA_SAGEMAKER_ROLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    t0 = time.monotonic()
    code = main(argv)
    return code, capsys.readouterr().err, time.monotonic() - t0


@pytest.mark.parametrize(("extra", "code", "messages"), [
    (["--styles", "fantasyy"], EXIT_USAGE, ["--styles: Unknown style or group 'fantasyy'", "prompts --list"]),
    (["--class", "persn"], EXIT_USAGE, ["Unknown subject class 'persn'", "Did you mean person",
                                        "--subject-kind (person, pet or object)"]),
    (["--class", "Sp@ce Alien!!", "--subject-kind", "pet"], EXIT_USAGE, ["--class 'Sp@ce Alien!!' is not a plain"]),
    (["--base-model", "nobody/no-such-model"], EXIT_ERROR, ["'nobody/no-such-model' is not in the Hugging Face cache",
                                                            "--base-model"]),
    (["--base-model", "../no/such/folder"], EXIT_ERROR, ["neither an existing folder nor a Hub id", "--base-model"]),
    (["--backend", "sagemaker"], EXIT_ERROR, ["No AWS region is set", "--region (or LENSA_REGION, AWS_DEFAULT_REGION)"]),
    (["--backend", "sagemaker", "--region", "us-east-1", "--max-cost", "0.05", "--no-spot"], EXIT_ERROR,
     ["over your limit of $0.05 (--max-cost (or LENSA_MAX_COST_USD))", "on-demand", "--instance-type"]),
    (["--backend", "sagemaker", "--region", "us-east-1", "--max-cost", "50"], EXIT_ERROR,
     ["No AWS credentials were found", "--profile (or AWS_PROFILE)"]),
    (["--backend", "sagemaker", "--region", "us-east-1", "--instance-type", "ml.m5.large"], EXIT_ERROR,
     ["'ml.m5.large' is not a known GPU training instance", "Fix --instance-type"]),
])
def test_run_fails_in_seconds_before_writing_anything(extra: list[str], code: int, messages: list[str],
                                                       tiny_sd: Path, tmp_path: Path, no_aws: None,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    photos = copy_sample_photos(tmp_path / "me", n=4)
    argv = ["run", str(photos), "--out", "out", "--base-model", str(tiny_sd), *extra]
    got, err, seconds = _run(argv, capsys)
    assert got == code, err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1  # one paragraph
    for message in messages:
        assert message in err
    assert not (tmp_path / "out").exists()  # neither the run folder nor the avatars folder was made
    assert seconds < 30  # seconds, not a training run (generous: the test machine is shared)


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_sd: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    photos = copy_sample_photos(tmp_path / "me", n=5)
    argv = ["run", str(photos), "--out", "out", "--base-model", str(tiny_sd), "--class", "axolotl",
            "--subject-kind", "pet", "--styles", "fantasy", "-n", "3", "--steps", "7", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Plan:    photos, train, generate" in out and "5 files in" in out and "axolotl (pet)" in out
    assert "lora on " in out and "(local folder), 7 steps, on local" in out and "Avatars: 3 in " in out
    assert str((tmp_path / "out" / "run").resolve()) in out
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["subject_kind"] == "pet" and plan["steps"] == 7 and plan["num_photos"] == 5
    assert plan["styles"] and all(isinstance(s, str) for s in plan["styles"]) and plan["reused"] == []


def test_empty_photo_folder_says_so(tiny_sd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, err, _ = _run(["run", "empty", "--out", "out", "--base-model", str(tiny_sd)], capsys)
    assert code == EXIT_ERROR and "No files in empty: put 4-20 photos" in err
    assert not (tmp_path / "out").exists()


def test_python_callers_get_python_names(tiny_sd: Path, tmp_path: Path) -> None:
    photos = copy_sample_photos(tmp_path / "me", n=4)
    pipe = Pipeline.from_folder(photos, base_model=str(tiny_sd), run_dir=tmp_path / "run", progress=False)
    with pytest.raises(UsageError, match=r"styles=: Unknown style or group 'nope'"):
        pipe.run(num_images=1, styles=["nope"])
    assert not (tmp_path / "run").exists()
    with pytest.raises(UsageError, match=r"subject_kind= \(person, pet or object\)"):
        Pipeline.from_folder(photos, subject_class="persn")
    remote = Pipeline.from_folder(photos, base_model=str(tiny_sd), backend="sagemaker", run_dir=tmp_path / "run",
                                  sagemaker={"region": "eu-west-1", "max_cost_usd": 0.01}, progress=False)
    with pytest.raises(CostLimitExceeded, match=r"over max_cost_usd=\$0\.01; nothing was launched"):
        remote.plan(num_images=1)
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        Pipeline.from_folder(photos, base_model="nobody/nothing", run_dir=tmp_path / "run",
                             progress=False).plan(num_images=1)
    assert not (tmp_path / "run").exists()


def test_plan_against_aws_reads_account_role_bucket_and_prices_the_job(aws_env: str, tiny_sd: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    photos = copy_sample_photos(tmp_path / "me", n=4)
    argv = ["run", str(photos), "--out", "out", "--base-model", str(tiny_sd), "--backend", "sagemaker",
            "--instance-type", "ml.g5.xlarge", "--max-cost", "20", "--dry-run", "--json"]
    code, err, _ = _run(argv, capsys)
    assert code == EXIT_ERROR and "No SageMaker execution role was given or found" in err
    assert "role in the [sagemaker] table of the config file (or LENSA_ROLE)" in err

    boto3.client("iam", region_name="us-east-1").create_role(RoleName="LensaForAllSageMakerRole",
                                                              AssumeRolePolicyDocument="{}")
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["backend"] == "sagemaker" and plan["instance_type"] == "ml.g5.xlarge" and plan["spot"] is True
    assert plan["region"] == "us-east-1" and 0 < plan["cost_usd"] < 20 and plan["max_cost_usd"] == 20
    assert any("sagemaker-us-east-1-" in n and "is created" in n for n in plan["notes"])  # default bucket: made later
    s3 = boto3.client("s3", region_name="us-east-1")
    assert s3.list_buckets()["Buckets"] == []  # the plan created nothing

    # a named bucket that does not exist is an error naming the setting
    (tmp_path / "lensa.toml").write_text('[sagemaker]\nbucket = "not-mine"\n')
    code, err, _ = _run([a for a in argv if a != "--json"], capsys)
    assert code == EXIT_ERROR and "Bucket 'not-mine' does not exist" in err and "LENSA_BUCKET" in err
    assert not (tmp_path / "out").exists()


def test_fp16_without_a_gpu_is_refused_before_training(tiny_sd: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: fp16 is fine")
    photos = copy_sample_photos(tmp_path / "me", n=4)
    (tmp_path / "fp16.toml").write_text('[training]\nmixed_precision = "fp16"\n')
    code, err, _ = _run(["run", str(photos), "--out", "out", "--base-model", str(tiny_sd), "--config", "fp16.toml"],
                        capsys)
    assert code == EXIT_ERROR and "mixed_precision 'fp16' needs a CUDA GPU" in err
    assert "mixed_precision in the [training] table of the config file" in err
    assert not (tmp_path / "out").exists()


def test_a_finished_training_is_not_checked_again(tiny_sd: Path, tmp_path: Path, no_aws: None) -> None:
    """Rendering again after a SageMaker training must not need AWS: the model is already in the run folder."""
    from lensa_for_all.errors import AWSConfigurationError
    from lensa_for_all.training.trainer import DreamBoothTrainer
    from pipeline_helpers import CopyTrainer, fast_config

    photos = copy_sample_photos(tmp_path / "me", n=4)
    config = fast_config(tiny_sd)
    run_dir = tmp_path / "run"
    Pipeline(photos, trainer=CopyTrainer(tiny_sd, config), run_dir=run_dir, progress=False).run(
        num_images=1, num_inference_steps=2)
    again = Pipeline(photos, trainer=DreamBoothTrainer(config), backend="sagemaker", run_dir=run_dir,
                     progress=False)
    plan = again.plan(num_images=2, num_inference_steps=2)
    assert plan.reused == ("photos", "train", "generate") and plan.estimate is None
    assert any("Training finished in an earlier run" in n for n in plan.notes)
    changed = Pipeline(photos, trainer=DreamBoothTrainer(config.replace(max_train_steps=3)), backend="sagemaker",
                       run_dir=run_dir, progress=False)
    with pytest.raises(AWSConfigurationError, match="No AWS region is set"):
        changed.plan(num_images=2, num_inference_steps=2)  # new settings: training runs again, on AWS


def test_precision_that_the_instance_cannot_run_is_refused(tiny_sd: Path, tmp_path: Path, no_aws: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    photos = copy_sample_photos(tmp_path / "me", n=4)
    (tmp_path / "bf16.toml").write_text('[training]\nmixed_precision = "bf16"\n')
    code, err, _ = _run(["run", str(photos), "--out", "out", "--base-model", str(tiny_sd), "--config", "bf16.toml",
                         "--backend", "sagemaker", "--region", "us-east-1", "--instance-type", "ml.g4dn.xlarge"],
                        capsys)
    assert code == EXIT_ERROR and "'bf16' does not run on ml.g4dn.xlarge (T4 GPUs have no bf16)" in err
    assert "--instance-type" in err and not (tmp_path / "out").exists()


def test_likeness_early_stopping_without_the_extra_is_refused_before_training(
        tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_aws: None) -> None:
    from lensa_for_all import likeness
    from lensa_for_all.errors import LikenessUnavailable
    from lensa_for_all.pipeline.plan import check_training

    monkeypatch.setattr(likeness, "is_available", lambda: False)  # as on a machine without the [likeness] extra
    photos = copy_sample_photos(tmp_path / "me", n=4)
    pipe = Pipeline.from_folder(photos, base_model=str(tiny_sd), run_dir=tmp_path / "run", progress=False,
                                early_stopping=True, early_stopping_metric="likeness", validation_steps=2,
                                validation_prompts=("a photo of ohwx person",))
    with pytest.raises(LikenessUnavailable, match=r'lensa-for-all\[likeness\].*early_stopping_metric'):
        pipe.plan(num_images=1)
    with pytest.raises(LikenessUnavailable, match="face models"):
        check_training(pipe.config, photos)
    assert not (tmp_path / "run").exists()
    pipe.trainer.config = pipe.config.replace(early_stopping_metric="fid")  # other metrics need nothing extra
    pipe.plan(num_images=1)
    # a plan is remade when the settings change between calls, not served from the last one
    pipe.trainer.config = pipe.config.replace(early_stopping_metric="likeness")
    with pytest.raises(LikenessUnavailable):
        pipe.plan(num_images=1)
