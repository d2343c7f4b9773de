"""The Hugging Face PyTorch Deep Learning Containers SageMaker runs our code in.

A maintained table instead of the sagemaker SDK's ``image_uris`` (which would pull ~1 GB of SDK for one
string). The versions are the ones this library was checked against (``CHECKED_AGAINST``); pass
``image_uri=`` to use another build (a newer DLC, or your own image with the same contract).
"""

from __future__ import annotations

import attrs

from ..errors import ConfigError

__all__ = ["ContainerImage", "TRAINING_IMAGE", "INFERENCE_IMAGE", "CHECKED_AGAINST", "training_image_uri",
           "inference_image_uri", "ecr_account"]

CHECKED_AGAINST = "sagemaker-python-sdk image_uri_config/huggingface.json (2024), DLC release notes"

# Registry account of the Deep Learning Containers per region; every region not listed uses 763104351884.
_DLC_ACCOUNT_DEFAULT = "763104351884"
_DLC_ACCOUNTS: dict[str, str] = {
    "af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-northeast-3": "364406365360",
    "ap-south-2": "772153158452", "ap-southeast-3": "907027046896", "ap-southeast-4": "457447274322",
    "ca-west-1": "204538143572", "cn-north-1": "727897471807", "cn-northwest-1": "727897471807",
    "eu-central-2": "380420809688", "eu-south-1": "692866216735", "eu-south-2": "503227376785",
    "il-central-1": "780543022126", "me-central-1": "914824155844", "me-south-1": "217643126080",
    "us-gov-east-1": "446045086412", "us-gov-west-1": "442386744353", "us-iso-east-1": "886529160074",
}


@attrs.frozen
class ContainerImage:
    """One DLC build: repository and tag (the account and region come from where the job runs)."""

    repository: str
    tag: str
    pytorch: str
    transformers: str
    python: str

    def uri(self, region: str) -> str:
        if not region:
            raise ConfigError("A region is needed to pick the container image")
        domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        return f"{ecr_account(region)}.dkr.ecr.{region}.{domain}/{self.repository}:{self.tag}"


TRAINING_IMAGE = ContainerImage(
    repository="huggingface-pytorch-training",
    tag="2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04",
    pytorch="2.1.0", transformers="4.36.0", python="3.10",
)
INFERENCE_IMAGE = ContainerImage(
    repository="huggingface-pytorch-inference",
    tag="2.1.0-transformers4.37.0-gpu-py310-cu118-ubuntu20.04",
    pytorch="2.1.0", transformers="4.37.0", python="3.10",
)


def ecr_account(region: str) -> str:
    return _DLC_ACCOUNTS.get(region, _DLC_ACCOUNT_DEFAULT)


def training_image_uri(region: str) -> str:
    return TRAINING_IMAGE.uri(region)


def inference_image_uri(region: str) -> str:
    return INFERENCE_IMAGE.uri(region)
