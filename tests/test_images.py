"""The container table, the pinned stack, and ``image_uri=`` overrides refused or warned before any upload."""

from __future__ import annotations

import warnings
from importlib import metadata

import pytest

from lensa_for_all.backends.images import (
    INFERENCE_IMAGE,
    TRAINING_IMAGE,
    UntestedImageWarning,
    check_image_uri,
    image_python,
)
from lensa_for_all.errors import ConfigError
from lensa_for_all.stack import OPTIONAL, PINNED, requirements

OLD_TRAINING = ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:"
                "2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04")
OLD_INFERENCE = ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
                 "2.1.0-transformers4.37.0-gpu-py310-cu118-ubuntu20.04")
ROLE = "arn:aws:iam::123456789012:role/LensaForAllSageMakerRole"


def test_defaults_are_the_images_the_parity_tests_run() -> None:
    assert TRAINING_IMAGE.uri("us-east-1") == \
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch:2.13.0-cu133-amzn2023-sagemaker"
    assert (TRAINING_IMAGE.python, TRAINING_IMAGE.pytorch, TRAINING_IMAGE.transformers) == ("3.12", "2.13.0", None)
    assert INFERENCE_IMAGE.uri("eu-south-1").startswith("692866216735.dkr.ecr.eu-south-1.amazonaws.com/"
                                                        "huggingface-pytorch-inference:2.6.0-transformers5.5.3")
    assert (INFERENCE_IMAGE.python, INFERENCE_IMAGE.pytorch, INFERENCE_IMAGE.transformers) == \
        ("3.12", "2.6.0", "5.5.3")
    assert INFERENCE_IMAGE.uri("cn-north-1").split("/")[0].endswith(".amazonaws.com.cn")


def test_the_tests_run_the_pinned_stack() -> None:
    """What the containers install is what this suite runs with (scripts/setup.sh installs these pins)."""
    for dist, version in PINNED.items():
        assert metadata.version(dist) == version, dist


def test_optional_requirements_follow_the_settings(tiny_sd: object) -> None:
    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.source_dir import requirements_for

    assert requirements(["bitsandbytes"])[-1] == OPTIONAL["bitsandbytes"]
    config = TrainingConfig.for_subject("dog", base_model=str(tiny_sd), use_8bit_adam=True)
    lines = requirements_for(config)
    assert lines[:len(PINNED)] == [f"{d}=={v}" for d, v in PINNED.items()]
    assert any(line.startswith("bitsandbytes==") for line in lines)
    likeness = TrainingConfig.for_subject("person", base_model=str(tiny_sd), early_stopping=True,
                                          early_stopping_metric="likeness", validation_steps=10,
                                          validation_prompts=("a photo of ohwx person",))
    assert requirements_for(likeness)[-2:] == [OPTIONAL["dlib-bin"], OPTIONAL["face-recognition-models"]]
    with pytest.raises(KeyError, match="unknown optional package"):
        requirements(["xformers"])


@pytest.mark.parametrize(("uri", "role"), [(OLD_TRAINING, "training"), (OLD_INFERENCE, "inference")])
def test_python_310_images_are_refused_with_the_working_ones(uri: str, role: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_image_uri(uri, role)  # type: ignore[arg-type]
    message = str(info.value)
    assert "Python 3.10" in message and ">= 3.11" in message and "Nothing was uploaded" in message
    expected = TRAINING_IMAGE if role == "training" else INFERENCE_IMAGE
    assert expected.tag in message


def test_unknown_images_warn_or_are_refused_by_their_python_tag() -> None:
    assert image_python("my.registry/team/sd:1.0-py39-cuda") == (3, 9)
    assert image_python("123.dkr.ecr.us-east-1.amazonaws.com/x:latest") is None
    with pytest.raises(ConfigError, match="Python 3.9"):
        check_image_uri("my.registry/team/sd:1.0-py39-cuda", "training")
    with pytest.warns(UntestedImageWarning, match="not one of the training images"):
        assert check_image_uri("123.dkr.ecr.us-east-1.amazonaws.com/mine:py312-v1", "training") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_image_uri(TRAINING_IMAGE.uri("us-west-2"), "training") == TRAINING_IMAGE
        assert check_image_uri(INFERENCE_IMAGE.uri("us-west-2"), "inference") == INFERENCE_IMAGE


def test_backend_refuses_an_old_image_before_touching_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    from lensa_for_all.backends.sagemaker import SageMakerBackend

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # any AWS call would fail loudly
    with pytest.raises(ConfigError, match="Python 3.10"):
        SageMakerBackend(role=ROLE, region="us-east-1", image_uri=OLD_TRAINING)
    backend = SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False)
    with pytest.raises(ConfigError, match="Python 3.10"):
        backend.deploy("s3://bucket/model.tar.gz", image_uri=OLD_INFERENCE)
