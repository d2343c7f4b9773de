"""Ctrl-C while waiting on a SageMaker job: the user is always told on stderr whether it was stopped or is still
running, with its name and the exact command to stop it or follow it again."""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from lensa_for_all.backends.sagemaker import SageMakerBackend

ROLE = "arn:aws:iam::123456789012:role/LensaForAllSageMakerRole"
STOP = "aws sagemaker stop-training-job --training-job-name lensa-job-1 --region us-east-1"


def _describe(name: str) -> dict[str, Any]:
    now = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    return {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
            "TrainingJobStatus": "InProgress", "SecondaryStatus": "Training", "CreationTime": now,
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
            "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://bkt-x/out/{name}/output/model.tar.gz"}}


class _Terminal(io.StringIO):
    """A stdin that is a terminal, with the user's answer typed in."""

    def isatty(self) -> bool:
        return True


def _interrupt_wait(backend: SageMakerBackend, *, stops: bool, stop_fails: bool = False) -> None:
    from botocore.stub import Stubber

    def interrupt(_s: float) -> None:
        raise KeyboardInterrupt

    backend.sleep = interrupt
    sm = backend.aws.client("sagemaker")
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", _describe("lensa-job-1"))
        if stops and stop_fails:
            stub.add_client_error("stop_training_job", "AccessDeniedException", "not allowed to stop")
        elif stops:
            stub.add_response("stop_training_job", {}, {"TrainingJobName": "lensa-job-1"})
        with pytest.raises(KeyboardInterrupt):
            backend.attach("lensa-job-1")
        stub.assert_no_pending_responses()


@pytest.fixture(autouse=True)
def _library_logging_off() -> Iterator[None]:
    """The message must reach the user with the library's logging silenced (as -q does)."""
    logger = logging.getLogger("lensa_for_all")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def test_without_a_terminal_the_job_is_left_running_and_the_user_is_told_how_to_stop_it(
        aws_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # piped input: nobody to ask, whatever it holds
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False)  # as Pipeline and -q build it
    _interrupt_wait(backend, stops=False)
    err = capsys.readouterr().err
    assert "lensa-job-1 is STILL RUNNING on AWS and billing" in err and STOP in err
    assert "SageMakerBackend().attach('lensa-job-1')" in err and "run the same `lensa-for-all run` command" in err


def test_at_a_terminal_yes_stops_the_job_and_says_so(aws_env: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False)
    _interrupt_wait(backend, stops=True)
    captured = capsys.readouterr()
    assert "Stop the remote training job lensa-job-1? [y/N]" in captured.out
    assert "lensa-job-1 was asked to STOP" in captured.err and "checkpoints stay in S3" in captured.err


def test_at_a_terminal_no_leaves_it_running_and_says_so(aws_env: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal("\n"))
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False)
    _interrupt_wait(backend, stops=False)
    assert STOP in capsys.readouterr().err


@pytest.mark.parametrize("choice", [True, False])
def test_an_explicit_choice_is_followed_and_reported(aws_env: str, choice: bool,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, stop_on_interrupt=choice)
    _interrupt_wait(backend, stops=choice)
    err = capsys.readouterr().err
    assert ("was asked to STOP" in err) == choice and ("STILL RUNNING" in err) == (not choice)


def test_a_failed_stop_says_the_job_may_still_run_and_how_to_stop_it(aws_env: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, stop_on_interrupt=True)
    _interrupt_wait(backend, stops=True, stop_fails=True)
    err = capsys.readouterr().err
    assert "could not stop SageMaker training job lensa-job-1" in err and "not allowed to stop" in err
    assert "STILL BE RUNNING" in err and STOP in err


# -- the endpoint's Hugging Face token ---------------------------------------------------------------------

TOKEN = "hf_ENDPOINTsecretVALUE42"


def test_the_endpoint_token_is_not_in_describe_model_but_reaches_the_handler(aws_env: str) -> None:
    import json

    from lensa_for_all.backends.endpoint_secrets import HF_TOKEN_URI_ENV, load_hf_token

    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False, hf_token=TOKEN)
    with backend.deploy("s3://bkt-models/out/job/output/model.tar.gz", instance_type="ml.g4dn.xlarge") as endpoint:
        sm = backend.aws.client("sagemaker")
        described = sm.describe_model(ModelName=endpoint.model_name)
        env = described["PrimaryContainer"]["Environment"]
        assert TOKEN not in json.dumps(described, default=str) and "HF_TOKEN" not in env
        uri = env[HF_TOKEN_URI_ENV]
        bucket, key = uri[5:].split("/", 1)
        s3 = backend.aws.client("s3")
        assert s3.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] in ("AES256", "aws:kms")
        # what the handler does at start-up in the endpoint container
        container_env = dict(env)
        assert load_hf_token(container_env, s3_client=s3) and container_env["HF_TOKEN"] == TOKEN
        already = {**env, "HF_TOKEN": "set-by-user"}
        assert not load_hf_token(already, s3_client=s3) and already["HF_TOKEN"] == "set-by-user"
    # deleting the endpoint deletes the token object with the model that named it
    with pytest.raises(s3.exceptions.ClientError, match="404|Not Found"):
        s3.head_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=key.rsplit("/", 2)[0]).get("KeyCount", 0) == 0


def test_the_handler_loads_the_token_before_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from lensa_for_all.backends import endpoint_secrets
    from lensa_for_all.generation import endpoint_handler

    calls: list[str] = []
    monkeypatch.setattr(endpoint_secrets, "load_hf_token", lambda *a, **k: calls.append("token") or False)
    with pytest.raises(RuntimeError, match="neither a diffusers pipeline nor a LoRA"):
        endpoint_handler.model_fn(str(tmp_path))
    assert calls == ["token"]
