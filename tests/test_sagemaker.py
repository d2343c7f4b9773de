"""SageMakerBackend against a real moto server (and botocore's Stubber where a status sequence is scripted).

The training container is "played" by lensa_for_all.testing.sagemaker.play_training_job with a fast stand-in
entry script; tests/test_sagemaker_container.py plays it with the real packaged training loop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import pytest

from archive_helpers import HOSTILE_KINDS, hostile_member, tar_bytes
from lensa_for_all.backends.pricing import INSTANCE_TYPES, actual_cost, estimate_cost
from lensa_for_all.backends.s3 import S3Store, S3Uri, deterministic_tarball
from lensa_for_all.backends.sagemaker import SageMakerBackend
from lensa_for_all.backends.training_job import TrainingJobSpec, unique_job_name
from lensa_for_all.errors import (
    AWSConfigurationError,
    ConfigError,
    CostLimitExceeded,
    TrainingError,
    TrainingJobFailed,
    UnsafeArchiveError,
)
from lensa_for_all.testing.sagemaker import write_job_log
from lensa_for_all.training.progress import TrainingProgress
from sagemaker_helpers import make_fake_source_dir, make_png_folder, play_on_start

ROLE = "arn:aws:iam::123456789012:role/LensaForAllSageMakerRole"
SECRET = "hf_SECRETtokenVALUE123"


# ---- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def backend(aws_env: str) -> SageMakerBackend:
    b = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, poll_interval_s=0)
    b.sleep = lambda _s: None
    return b


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    return {"source": make_fake_source_dir(tmp_path / "src"), "photos": make_png_folder(tmp_path / "photos"),
            "out": tmp_path / "run" / "model"}


class Recorder(list):  # type: ignore[type-arg]
    """Records the parameters of calls; a list that the test holds (botocore keeps handlers weakly)."""

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        self.append(json.loads(json.dumps(params, default=str)))


def capture(client: Any, event: str, recorder: Recorder | None = None) -> Recorder:
    recorder = recorder if recorder is not None else Recorder()
    client.meta.events.register(event, recorder)
    return recorder


# ---- pure units ----------------------------------------------------------------------------------------


def test_estimate_cost_reflects_steps_method_spot_and_region() -> None:
    from lensa_for_all.config import TrainingConfig

    lora = TrainingConfig.for_subject("dog")
    est = estimate_cost(lora, 10, instance_type="ml.g5.2xlarge", spot=True)
    assert est.train_steps == lora.resolve_max_train_steps(10)
    assert 0 < est.spot_usd < est.on_demand_usd
    assert est.usd == est.spot_usd
    assert "ml.g5.2xlarge" in str(est) and "us-east-1" in str(est)
    person_full = TrainingConfig.for_subject("person", method="full")
    full = estimate_cost(person_full, 10, instance_type="ml.g5.2xlarge", spot=False)
    assert full.usd == full.on_demand_usd > est.on_demand_usd * 2  # more steps, full weights, class images
    assert full.class_images == person_full.num_class_images
    slow = estimate_cost(lora, 10, instance_type="ml.g4dn.xlarge", spot=True)
    assert slow.seconds > est.seconds
    assert estimate_cost(lora, 10, region="eu-central-1").on_demand_usd > est.on_demand_usd
    assert estimate_cost({"max_train_steps": 100}, 4).train_steps == 100
    with pytest.raises(ConfigError, match="ml.g5.2xlarge"):
        estimate_cost(lora, 10, instance_type="ml.m5.large")


def test_actual_cost_uses_billable_seconds() -> None:
    desc = {"ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1},
            "BillableTimeInSeconds": 3600, "TrainingTimeInSeconds": 9000}
    assert actual_cost(desc) == pytest.approx(INSTANCE_TYPES["ml.g5.2xlarge"].usd_per_hour)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    running = {"ResourceConfig": {"InstanceType": "ml.g4dn.xlarge"}, "TrainingStartTime": start,
               "TrainingEndTime": start + dt.timedelta(hours=2)}
    assert actual_cost(running) == pytest.approx(2 * 0.736)
    assert actual_cost({**running, "EnableManagedSpotTraining": True}) == pytest.approx(2 * 0.736 * 0.35)
    assert actual_cost({**desc, "EnableManagedSpotTraining": True}) == actual_cost(desc)  # billable is final
    assert actual_cost({"ResourceConfig": {"InstanceType": "ml.g4dn.xlarge"}}) == 0.0


def test_job_names_are_unique_readable_and_short() -> None:
    names = {unique_job_name("lensa-" + "x" * 80) for _ in range(20)}
    assert len(names) == 20
    for n in names:
        assert len(n) <= 63 and n.startswith("lensa-xxx") and n.replace("-", "").isalnum()


def test_job_spec_validates_and_hides_secrets() -> None:
    spec = TrainingJobSpec(job_name="lensa-1", image_uri="img", role_arn=ROLE, region="us-east-1",
                           source_uri="s3://b/s.tar.gz", output_uri="s3://b/out", checkpoint_uri="s3://b/ck",
                           channels={"instance": "s3://b/in/"}, environment={"HF_TOKEN": SECRET, "A": "1"})
    req = spec.to_request()
    assert req["Environment"]["HF_TOKEN"] == SECRET
    assert SECRET not in json.dumps(spec.redacted()) and SECRET not in repr(spec)
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 4 * 3600, "MaxWaitTimeInSeconds": 8 * 3600}
    with pytest.raises(ConfigError, match="max_wait_s"):
        TrainingJobSpec(job_name="j", image_uri="i", role_arn=ROLE, region="r", source_uri="s3://b/s",
                        output_uri="s3://b/o", channels={"instance": "s3://b/i"}, max_run_s=100, max_wait_s=50)
    with pytest.raises(ConfigError, match="instance"):
        TrainingJobSpec(job_name="j", image_uri="i", role_arn=ROLE, region="r", source_uri="s3://b/s",
                        output_uri="s3://b/o", channels={"class": "s3://b/c"})
    with pytest.raises(ConfigError, match="subnets"):
        TrainingJobSpec(job_name="j", image_uri="i", role_arn=ROLE, region="r", source_uri="s3://b/s",
                        output_uri="s3://b/o", channels={"instance": "s3://b/i"}, subnets=["subnet-1"])


def test_backend_validates_settings_before_touching_aws() -> None:
    with pytest.raises(ConfigError, match="not a known GPU"):
        SageMakerBackend(instance_type="ml.g5.2xlarg")
    with pytest.raises(ConfigError, match="max_cost_usd"):
        SageMakerBackend(max_cost_usd=0)
    with pytest.raises(ConfigError, match="run_name"):
        SageMakerBackend(run_name="a b")
    with pytest.raises(ConfigError, match="multi-GPU instance type"):
        SageMakerBackend(instance_count=2)


def test_source_tarball_is_deterministic(tmp_path: Path) -> None:
    src = make_fake_source_dir(tmp_path / "src")
    a = deterministic_tarball(src, tmp_path / "a.tar.gz").read_bytes()
    (src / "training_config.json").touch()  # new mtime, same content
    b = deterministic_tarball(src, tmp_path / "b.tar.gz").read_bytes()
    assert a == b
    (src / "training_config.json").write_text('{"max_train_steps": 7}')
    assert deterministic_tarball(src, tmp_path / "c.tar.gz").read_bytes() != a
    assert S3Uri.parse("s3://bkt/a/b").join("c/", "/d") == S3Uri("bkt", "a/b/c/d")


# ---- the full path on moto -----------------------------------------------------------------------------


def test_run_uploads_trains_downloads_and_reports(backend: SageMakerBackend, inputs: dict[str, Path],
                                                  tmp_path: Path) -> None:
    started = play_on_start(backend, tmp_path / "container")
    reports: list[TrainingProgress] = []
    result = backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"], progress=reports.append)

    assert result.backend == "sagemaker" and result.job_name == started[0]
    assert result.artifact_uri and result.artifact_uri.endswith(f"/output/{result.job_name}/output/model.tar.gz")
    assert result.output_dir == inputs["out"]
    assert (inputs["out"] / "weights.safetensors").is_file()
    # the launcher put the endpoint handler into the artifact
    assert (inputs["out"] / "code" / "inference.py").read_text().startswith('"""Endpoint handler')
    from importlib.metadata import version

    assert f"diffusers=={version('diffusers')}" in (inputs["out"] / "code" / "requirements.txt").read_text()
    assert [r.step for r in reports] == [1, 2, 3, 4, 5, 6] and reports[-1].total_steps == 6
    assert result.log_path is not None and "LENSA_PROGRESS" in result.log_path.read_text()
    assert result.cost_usd is not None and result.cost_usd >= 0
    assert result.metrics["estimated_usd"] > 0

    # the result deploys as is: the endpoint serves the artifact the job wrote
    with backend.deploy(result, instance_type="ml.g4dn.xlarge") as endpoint:
        model = backend.aws.client("sagemaker").describe_model(ModelName=endpoint.model_name)
        assert model["PrimaryContainer"]["ModelDataUrl"] == result.artifact_uri

    # default bucket: created, encrypted, private; every key of the run under one prefix
    s3 = backend.aws.client("s3")
    bucket = "sagemaker-us-east-1-123456789012"
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["BlockPublicAcls"]
    keys = S3Store(s3, bucket, owner="123456789012").list_keys("")
    run_prefix = keys[0].split("/")[0] + "/" + keys[0].split("/")[1] + "/"
    assert all(k.startswith(run_prefix) for k in keys)
    assert {k[len(run_prefix):].split("/")[0] for k in keys} == {"input", "source", "checkpoints", "output"}
    head = s3.head_object(Bucket=bucket, Key=next(k for k in keys if "/input/instance/" in k))
    assert head["ServerSideEncryption"] == "AES256" and "lensa-sha256" in head["Metadata"]


def test_on_job_started_names_the_job_before_the_wait(backend: SageMakerBackend, inputs: dict[str, Path],
                                                      tmp_path: Path) -> None:
    play_on_start(backend, tmp_path / "container")
    events: list[tuple[str, Any]] = []

    def started(name: str) -> None:  # the job exists in SageMaker when the caller hears its name
        status = backend.aws.client("sagemaker").describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
        events.append(("started", (name, status)))

    result = backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"],
                         progress=lambda p: events.append(("progress", p.step)), on_job_started=started)

    assert events[0] == ("started", (result.job_name, events[0][1][1])) and events[0][1][1]
    assert [e for e in events if e[0] == "started"] == events[:1]  # once, before any progress
    assert [v for k, v in events[1:]] == [1, 2, 3, 4, 5, 6]


def test_rerun_skips_unchanged_uploads_and_syncs_changes(backend: SageMakerBackend, inputs: dict[str, Path],
                                                         tmp_path: Path) -> None:
    play_on_start(backend, tmp_path / "container")
    backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"])
    s3 = backend.aws.client("s3")
    puts = Recorder()
    for op in ("PutObject", "CreateMultipartUpload"):
        capture(s3, f"before-parameter-build.s3.{op}", puts)
    backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"])
    # (the played container's checkpoint and model.tar.gz uploads are not the backend's)
    assert [p for p in puts if "/input/" in p["Key"] or "/source/" in p["Key"]] == []  # nothing re-uploaded
    puts.clear()

    (inputs["photos"] / "photo_00.png").unlink()
    make_png_folder(tmp_path / "new", count=1, seed=9)
    (tmp_path / "new" / "photo_00.png").rename(inputs["photos"] / "photo_09.png")
    backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"])
    assert [p["Key"].rsplit("/", 1)[1] for p in puts if "/input/" in p["Key"]] == ["photo_09.png"]
    instance_keys = [k for k in S3Store(s3, "sagemaker-us-east-1-123456789012", owner="123456789012").list_keys("")
                     if "/input/instance/" in k]
    assert sorted(k.rsplit("/", 1)[1] for k in instance_keys) == ["photo_01.png", "photo_02.png", "photo_03.png",
                                                                  "photo_09.png"]


def test_exact_job_request_and_no_secret_in_logs(aws_env: str, inputs: dict[str, Path], tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    backend = SageMakerBackend(role=ROLE, bucket="my-avatars", region="us-east-1", instance_type="ml.g5.2xlarge",
                               spot=True, max_run_s=3600, volume_size_gb=40, show_progress=False,
                               poll_interval_s=0, run_name="alice", tags={"team": "app"},
                               subnets=["subnet-1"], security_group_ids=["sg-1"], kms_key_id="kms-123")
    backend.aws.client("s3").create_bucket(Bucket="my-avatars")
    play_on_start(backend, tmp_path / "container")
    requests = capture(backend.aws.client("sagemaker"), "before-parameter-build.sagemaker.CreateTrainingJob")
    caplog.set_level(logging.DEBUG)
    result = backend.run(inputs["source"], {"instance": inputs["photos"], "class": inputs["photos"]},
                         inputs["out"], hyperparameters={"max_train_steps": 4})
    (req,) = requests
    assert req["TrainingJobName"] == result.job_name and req["TrainingJobName"].startswith("lensa-alice-")
    assert req["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch:2.13.0-cu133-amzn2023-sagemaker")
    assert req["RoleArn"] == ROLE
    assert req["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 40,
                                     "VolumeKmsKeyId": "kms-123"}
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert req["CheckpointConfig"] == {"S3Uri": "s3://my-avatars/lensa-for-all/alice/checkpoints",
                                       "LocalPath": "/opt/ml/checkpoints"}
    assert req["OutputDataConfig"] == {"S3OutputPath": "s3://my-avatars/lensa-for-all/alice/output",
                                       "KmsKeyId": "kms-123"}
    assert {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["InputDataConfig"]} == {
        "class": "s3://my-avatars/lensa-for-all/alice/input/class/",
        "instance": "s3://my-avatars/lensa-for-all/alice/input/instance/"}
    hps = {k: json.loads(v) for k, v in req["HyperParameters"].items()}
    assert hps["max_train_steps"] == 4 and hps["sagemaker_program"] == "lensa_sagemaker_entry.py"
    assert hps["sagemaker_submit_directory"] == "s3://my-avatars/lensa-for-all/alice/source/sourcedir.tar.gz"
    # the token is not in the request (DescribeTrainingJob would show it): an encrypted S3 object holds it
    assert "HF_TOKEN" not in req["Environment"] and SECRET not in json.dumps(req, default=str)
    token_uri = req["Environment"]["LENSA_HF_TOKEN_S3_URI"]
    assert token_uri.startswith("s3://my-avatars/lensa-for-all/alice/secrets/")
    head = backend.aws.client("s3").head_object(Bucket="my-avatars", Key=token_uri.split("/", 3)[3])
    assert head["ServerSideEncryption"] == "aws:kms"
    # ... which the launcher in the container reads into the training process's HF_TOKEN
    from lensa_for_all.backends.container_launcher import child_environment

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("LENSA_HF_TOKEN_S3_URI", token_uri)
    assert child_environment(inputs["source"])["HF_TOKEN"] == SECRET
    assert {t["Key"]: t["Value"] for t in req["Tags"]} == {"lensa-for-all": __import__("lensa_for_all").__version__,
                                                           "lensa-for-all:run": "alice", "team": "app"}
    assert req["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert "CreateTrainingJob" in caplog.text and SECRET not in caplog.text
    assert SECRET not in repr(backend)
    # objects are encrypted with the KMS key
    s3 = backend.aws.client("s3")
    head = s3.head_object(Bucket="my-avatars", Key="lensa-for-all/alice/source/sourcedir.tar.gz")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith("kms-123")


def test_cached_class_images_are_uploaded_as_the_class_channel(backend: SageMakerBackend, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.class_images import class_image_cache_key

    settings = {"max_train_steps": 6, "with_prior_preservation": True, "num_class_images": 3}
    config = TrainingConfig.from_dict(settings)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LENSA_CLASS_IMAGE_CACHE", str(cache))
    folder = make_png_folder(cache / class_image_cache_key(config.base_model, config.revision,
                                                           config.class_prompt_text, config.resolution, 3), count=3)
    (folder / "key.json").write_text("{}")
    play_on_start(backend, tmp_path / "c")
    requests = capture(backend.aws.client("sagemaker"), "before-parameter-build.sagemaker.CreateTrainingJob")
    source = make_fake_source_dir(tmp_path / "src", settings)
    backend.run(source, {"instance": make_png_folder(tmp_path / "photos")}, tmp_path / "run" / "model")
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in requests[0]["InputDataConfig"]}
    assert set(channels) == {"instance", "class"}
    class_uri = S3Uri.parse(channels["class"])
    keys = S3Store(backend.aws.client("s3"), class_uri.bucket, owner="123456789012").list_keys(class_uri.key)
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == ["key.json", "photo_00.png", "photo_01.png", "photo_02.png"]


def test_max_cost_refuses_launch_before_any_upload(aws_env: str, inputs: dict[str, Path]) -> None:
    backend = SageMakerBackend(role=ROLE, region="us-east-1", max_cost_usd=0.01, show_progress=False)
    with pytest.raises(CostLimitExceeded, match=r"estimated cost \$\d+\.\d\d is over max_cost_usd=\$0\.01"):
        backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"])
    assert backend.aws.client("s3").list_buckets()["Buckets"] == []
    assert backend.aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_full_fine_tuning_on_a_16gb_gpu_warns(aws_env: str, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    source = make_fake_source_dir(tmp_path / "src", {"max_train_steps": 6, "method": "full"})
    backend = SageMakerBackend(role=ROLE, region="us-east-1", instance_type="ml.g4dn.xlarge", max_cost_usd=0.001,
                               show_progress=False)
    with pytest.raises(CostLimitExceeded):
        backend.run(source, {"instance": make_png_folder(tmp_path / "p")}, tmp_path / "out")
    assert "may run out of memory" in caplog.text and "16 GB" in caplog.text


def test_unknown_hyperparameter_fails_before_launch(backend: SageMakerBackend, inputs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="no_such_field"):
        backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"],
                    hyperparameters={"no_such_field": 1})
    with pytest.raises(ConfigError, match="lensa_train.py"):
        backend.run(inputs["photos"], {"instance": inputs["photos"]}, inputs["out"])


def test_spot_interruption_resumes_from_s3_checkpoints(backend: SageMakerBackend, inputs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    # Uninterrupted reference run, in its own run folder (own checkpoint prefix).
    play_on_start(backend, tmp_path / "c0")
    ref = backend.run(inputs["source"], {"instance": inputs["photos"]}, tmp_path / "ref" / "model")

    # Interrupted run: the container is killed after step 3 (checkpoints 1-3 synced to S3); the job fails
    # the way SageMaker reports a spot job that could not get capacity back before max_wait.
    interrupted = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, poll_interval_s=0)
    jobs = play_on_start(interrupted, tmp_path / "c1", kill_at_step=3, FAKE_HANG_AFTER_STEP="3")

    def fail_it(parsed: dict[str, Any], **_: Any) -> None:
        if jobs and parsed.get("TrainingJobName") == jobs[0]:
            parsed.update(TrainingJobStatus="Failed", SecondaryStatus="MaxWaitTimeExceeded",
                          FailureReason="Training job reached MaxWaitTimeInSeconds waiting for spot capacity")

    interrupted.aws.client("sagemaker").meta.events.register("after-call.sagemaker.DescribeTrainingJob", fail_it)
    out = tmp_path / "spot" / "model"
    with pytest.raises(TrainingJobFailed, match="spot capacity") as info:
        interrupted.run(inputs["source"], {"instance": inputs["photos"]}, out)
    assert info.value.log_tail[-1] == "(instance reclaimed)"
    assert not out.exists()

    # Second run, same output folder -> same run prefix -> same checkpoint URI: resumes at step 3.
    again = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, poll_interval_s=0)
    jobs2 = play_on_start(again, tmp_path / "c2")
    steps: list[int] = []
    again.run(inputs["source"], {"instance": inputs["photos"]}, out, progress=lambda p: steps.append(p.step))
    assert steps == [4, 5, 6]
    assert "resumed from step 3" in (tmp_path / "c2" / jobs2[0] / "container.log").read_text()
    assert ref.output_dir is not None
    w_ref = load_file(str(ref.output_dir / "weights.safetensors"))["w"]
    w_resumed = load_file(str(out / "weights.safetensors"))["w"]
    assert (w_ref == w_resumed).all()


# ---- failures, Ctrl-C and the cost guard, scripted with Stubber ---------------------------------------


def _describe(name: str, status: str, secondary: str, **extra: Any) -> dict[str, Any]:
    now = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    return {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
            "TrainingJobStatus": status, "SecondaryStatus": secondary, "CreationTime": now,
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
            "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://bkt-x/out/{name}/output/model.tar.gz"}, **extra}


def test_failed_job_raises_with_reason_and_log_tail(backend: SageMakerBackend, tmp_path: Path) -> None:
    from botocore.stub import Stubber

    name = "lensa-failing-job"
    write_job_log(backend.aws, name, ["Downloading model", "LENSA_PROGRESS " + json.dumps(
        {"step": 1, "total_steps": 10}), "Traceback (most recent call last):", "torch.OutOfMemoryError: CUDA OOM"])
    sm = backend.aws.client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", _describe(name, "InProgress", "Starting"))
        stub.add_response("describe_training_job", _describe(name, "InProgress", "Training"))
        stub.add_response("describe_training_job", _describe(name, "InProgress", "Training"))
        stub.add_response("describe_training_job", _describe(
            name, "Failed", "Failed", FailureReason="AlgorithmError: ExecuteUserScriptError: exit code 1"))
        seen: list[int] = []
        with pytest.raises(TrainingJobFailed) as info:
            backend.attach(name, tmp_path / "out", progress=lambda p: seen.append(p.step))
        stub.assert_no_pending_responses()
    err = info.value
    assert err.job_name == name and err.reason == "AlgorithmError: ExecuteUserScriptError: exit code 1"
    assert "ExecuteUserScriptError" in str(err) and "torch.OutOfMemoryError: CUDA OOM" in str(err)
    assert err.log_tail[-1] == "torch.OutOfMemoryError: CUDA OOM"
    assert seen == [1]
    assert not (tmp_path / "out").exists()


def test_cost_guard_stops_a_job_that_runs_past_the_limit(aws_env: str) -> None:
    from botocore.stub import Stubber

    backend = SageMakerBackend(role=ROLE, region="us-east-1", max_cost_usd=1.0, show_progress=False,
                               poll_interval_s=0)
    backend.sleep = lambda _s: None
    name = "lensa-expensive"
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)
    sm = backend.aws.client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", _describe(name, "InProgress", "Training",
                                                             TrainingStartTime=long_ago))
        stub.add_response("stop_training_job", {}, {"TrainingJobName": name})
        with pytest.raises(CostLimitExceeded, match=r"about \$4\.\d\d, over max_cost_usd=\$1\.00; it was stopped"):
            backend.attach(name)
        stub.assert_no_pending_responses()


# choice=None (ask at a terminal; without one, leave running) is driven for real in test_faults_sagemaker.py
@pytest.mark.parametrize(("choice", "expect_stop"), [(True, True), (False, False)])
def test_ctrl_c_stops_the_remote_job_or_leaves_it(aws_env: str, choice: bool | None, expect_stop: bool) -> None:
    from botocore.stub import Stubber

    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, stop_on_interrupt=choice)
    asked: list[str] = []
    backend.confirm = lambda q: asked.append(q) or True  # type: ignore[func-returns-value]

    def interrupt(_s: float) -> None:
        raise KeyboardInterrupt

    backend.sleep = interrupt
    sm = backend.aws.client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", _describe("j", "InProgress", "Training"))
        if expect_stop:
            stub.add_response("stop_training_job", {}, {"TrainingJobName": "j"})
        with pytest.raises(KeyboardInterrupt):
            backend.attach("j")
        stub.assert_no_pending_responses()
    assert bool(asked) == (choice is None)


def test_stopped_job_is_an_error_that_says_how_to_resume(backend: SageMakerBackend) -> None:
    from botocore.stub import Stubber

    sm = backend.aws.client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", _describe("j", "Stopped", "Stopped"))
        with pytest.raises(TrainingError, match="resume from its last checkpoint"):
            backend.attach("j")


# ---- artifacts: download and hostile archives ------------------------------------------------------


def _job_with_artifact(backend: SageMakerBackend, tar_bytes: bytes) -> str:
    s3 = backend.aws.client("s3")
    s3.create_bucket(Bucket="bkt-x")
    name = "lensa-artifact-job"
    backend.aws.client("sagemaker").create_training_job(
        TrainingJobName=name, AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn=ROLE, OutputDataConfig={"S3OutputPath": "s3://bkt-x/out"},
        ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    s3.put_object(Bucket="bkt-x", Key=f"out/{name}/output/model.tar.gz", Body=tar_bytes)
    return name


def test_attach_downloads_and_extracts_a_finished_job(backend: SageMakerBackend, tmp_path: Path) -> None:
    name = _job_with_artifact(backend, tar_bytes([(tarfile.TarInfo("unet/w.safetensors"), b"weights"),
                                                   (tarfile.TarInfo("code/inference.py"), b"# handler")]))
    result = backend.attach(name, tmp_path / "model")
    assert result.output_dir is not None
    assert (result.output_dir / "unet" / "w.safetensors").read_bytes() == b"weights"
    assert result.artifact_uri == f"s3://bkt-x/out/{name}/output/model.tar.gz"
    keep_uri = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, download=False)
    assert keep_uri.attach(name, tmp_path / "other").output_dir is None
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("kind", "match"), HOSTILE_KINDS)
def test_hostile_model_tarball_is_refused(aws_env: str, tmp_path: Path, kind: str, match: str) -> None:
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, max_artifact_bytes=1024)
    info, data = hostile_member(kind, big=4096)
    name = _job_with_artifact(backend, tar_bytes([(tarfile.TarInfo("ok.txt"), b"fine"), (info, data)]))
    with pytest.raises(UnsafeArchiveError, match=match):
        backend.attach(name, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert not (tmp_path / "evil").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["logs"])


# ---- account setup: credentials, region, role, bucket ----------------------------------------------


def test_missing_credentials_give_a_clear_error(aws_env: str, inputs: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False)
    with pytest.raises(AWSConfigurationError, match="no AWS credentials were found.*aws configure"):
        backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"])


def test_missing_region_gives_a_clear_error(aws_env: str, inputs: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION")
    backend = SageMakerBackend(role=ROLE, show_progress=False)
    with pytest.raises(AWSConfigurationError, match="No AWS region is set"):
        backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"])


def test_unknown_profile_gives_a_clear_error(aws_env: str) -> None:
    with pytest.raises(AWSConfigurationError, match="profile 'nope'"):
        SageMakerBackend(profile="nope").aws  # noqa: B018


def test_role_resolution(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = SageMakerBackend(region="us-east-1")
    aws = backend.aws
    assert aws.resolve_role(ROLE) == ROLE
    with pytest.raises(AWSConfigurationError, match="No SageMaker execution role.*AmazonSageMakerFullAccess"):
        aws.resolve_role(None)
    with pytest.raises(AWSConfigurationError, match="'MyRole' does not exist"):
        aws.resolve_role("MyRole")
    iam = aws.client("iam")
    arn = iam.create_role(RoleName="LensaForAllSageMakerRole", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    assert aws.resolve_role(None) == arn
    other = iam.create_role(RoleName="MyRole", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    assert aws.resolve_role("MyRole") == other
    monkeypatch.setenv("LENSA_SAGEMAKER_ROLE", other)
    assert aws.resolve_role(None) == other


def test_bucket_of_another_account_is_refused(backend: SageMakerBackend) -> None:
    from botocore.stub import Stubber

    s3 = backend.aws.client("s3")
    assert backend.aws.account_id == "123456789012"
    with Stubber(s3) as stub:
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403,
                              expected_params={"Bucket": "someone-elses", "ExpectedBucketOwner": "123456789012"})
        with pytest.raises(AWSConfigurationError, match="not owned by account 123456789012"):
            backend.aws.ensure_bucket("someone-elses")
    with pytest.raises(AWSConfigurationError, match="'typo-bucket' does not exist.*leave bucket unset"):
        backend.aws.ensure_bucket("typo-bucket")
    assert backend.aws.client("s3").list_buckets()["Buckets"] == []  # a given bucket is never created
    default = backend.aws.ensure_bucket(None, kms_key_id="kms-9")
    assert default == "sagemaker-us-east-1-123456789012" == backend.aws.ensure_bucket(None)
    enc = backend.aws.client("s3").get_bucket_encryption(Bucket=default)
    rule = enc["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert rule == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "kms-9"}


# ---- the launcher that runs first in the container ---------------------------------------------------


def test_launcher_runs_one_process_per_gpu_and_installs_handler_only_on_success(
        backend: SageMakerBackend, inputs: dict[str, Path], tmp_path: Path) -> None:
    from lensa_for_all.backends.container_launcher import build_command

    here = Path("/opt/ml/code")
    assert build_command(here, 1)[1:] == ["/opt/ml/code/lensa_train.py"]
    multi = build_command(here, 4)
    assert multi[1:6] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4"]

    jobs = play_on_start(backend, tmp_path / "c", FAKE_FAIL="1")
    with pytest.raises(Exception, match="does not exist"):  # no model.tar.gz: the played job failed
        backend.run(inputs["source"], {"instance": inputs["photos"]}, inputs["out"])
    root = tmp_path / "c" / jobs[0]
    assert not (root / "model" / "code").exists()
    assert (root / "output" / "failure").read_text() == "forced failure for the test"


def test_log_tail_merges_streams_and_returns_only_new_lines(backend: SageMakerBackend) -> None:
    import time

    from lensa_for_all.backends.logs import TRAINING_LOG_GROUP, LogTail

    logs = backend.aws.client("logs")
    tail = LogTail(logs, "job-a", keep=3)
    assert tail.poll() == []  # no log group yet: the container has not started
    logs.create_log_group(logGroupName=TRAINING_LOG_GROUP)
    now = int(time.time() * 1000)
    for stream, offsets in (("job-a/algo-1-1", (0, 2)), ("job-a/algo-2-1", (1, 3)), ("job-ab/algo-1-1", (4,))):
        logs.create_log_stream(logGroupName=TRAINING_LOG_GROUP, logStreamName=stream)
        logs.put_log_events(logGroupName=TRAINING_LOG_GROUP, logStreamName=stream,
                            logEvents=[{"timestamp": now + t, "message": f"{stream} t{t}"} for t in offsets])
    assert tail.poll() == ["job-a/algo-1-1 t0", "job-a/algo-2-1 t1", "job-a/algo-1-1 t2", "job-a/algo-2-1 t3"]
    assert tail.poll() == []
    logs.put_log_events(logGroupName=TRAINING_LOG_GROUP, logStreamName="job-a/algo-1-1",
                        logEvents=[{"timestamp": now + 9, "message": "late line"}])
    assert tail.poll() == ["late line"]
    assert list(tail.tail) == ["job-a/algo-1-1 t2", "job-a/algo-2-1 t3", "late line"]
