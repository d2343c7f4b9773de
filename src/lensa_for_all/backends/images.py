"""The AWS Deep Learning Containers SageMaker runs our code in, and which of them can run it.

The table is data (``container_images.json`` beside this file): for each image its repository and tag,
its Python, torch and transformers, where those facts were read, and the packages it preinstalls that
our stack also needs. The container-parity tests build a stand-in of each image from that file (its
Python, those packages at those versions), install our ``requirements.txt`` into it as the container
does, and run the training entry point and the endpoint handler there. An image not in the table is
"untested": it may work, and gets a warning; one whose Python is too old for the pinned stack is refused
before anything is uploaded.

A maintained table instead of the sagemaker SDK's ``image_uris`` (which would pull ~1 GB of SDK for one
string, and knows nothing of what our pinned stack needs).
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

import attrs

from ..errors import ConfigError
from ..stack import MIN_PYTHON

__all__ = ["ContainerImage", "UntestedImageWarning", "IMAGES", "TRAINING_IMAGE", "INFERENCE_IMAGE",
           "TRAINING_IMAGES", "INFERENCE_IMAGES", "DATA_FILE", "check_image_uri", "training_image_uri",
           "inference_image_uri", "ecr_account", "image_python"]

DATA_FILE = "container_images.json"
Role = Literal["training", "inference"]

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


class UntestedImageWarning(UserWarning):
    """``image_uri=`` names an image the container-parity tests have not run our code in."""


def _frozen_mapping(value: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in dict(value).items()))


@attrs.frozen
class ContainerImage:
    """One Deep Learning Container build (the account and region come from where the job runs)."""

    name: str
    role: Role
    repository: str
    tag: str
    python: str
    pytorch: str
    transformers: str | None = None
    default: bool = False
    source: str = ""
    preinstalled: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_frozen_mapping)

    def uri(self, region: str) -> str:
        if not region:
            raise ConfigError("A region is needed to pick the container image")
        domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        return f"{ecr_account(region)}.dkr.ecr.{region}.{domain}/{self.repository}:{self.tag}"

    @property
    def packages(self) -> dict[str, str]:
        """The preinstalled packages that matter to our stack, name -> version."""
        return dict(self.preinstalled)

    def describe(self) -> str:
        extra = f", transformers {self.transformers}" if self.transformers else ""
        return f"{self.repository}:{self.tag} (Python {self.python}, torch {self.pytorch}{extra})"


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _load_images() -> tuple[ContainerImage, ...]:
    out = []
    for entry in _table()["images"]:
        out.append(ContainerImage(
            name=entry["name"], role=entry["role"], repository=entry["repository"], tag=entry["tag"],
            python=entry["python"], pytorch=entry["torch"], transformers=entry.get("transformers"),
            default=bool(entry.get("default")), source=entry.get("source", ""),
            preinstalled=entry.get("preinstalled", {}),
        ))
    return tuple(out)


IMAGES: tuple[ContainerImage, ...] = _load_images()
TRAINING_IMAGES = tuple(i for i in IMAGES if i.role == "training")
INFERENCE_IMAGES = tuple(i for i in IMAGES if i.role == "inference")
TRAINING_IMAGE = next(i for i in TRAINING_IMAGES if i.default)
INFERENCE_IMAGE = next(i for i in INFERENCE_IMAGES if i.default)


def ecr_account(region: str) -> str:
    return _DLC_ACCOUNTS.get(region, _DLC_ACCOUNT_DEFAULT)


def training_image_uri(region: str) -> str:
    return TRAINING_IMAGE.uri(region)


def inference_image_uri(region: str) -> str:
    return INFERENCE_IMAGE.uri(region)


def _split_uri(uri: str) -> tuple[str, str]:
    """``repository`` and ``tag`` of an image URI (registry and digest ignored)."""
    path = uri.split("@", 1)[0]
    name, _, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    repository = name.rsplit("/", 1)[-1] if "/" in name else name
    return repository, tag


def image_python(uri: str) -> tuple[int, int] | None:
    """The Python version an image's tag announces (``...-py310-...`` -> (3, 10)), or None."""
    _, tag = _split_uri(uri)
    match = re.search(r"(?:^|[-_.])py(3)(\d{1,2})(?:$|[-_.])", tag)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _working(role: Role) -> str:
    images = TRAINING_IMAGES if role == "training" else INFERENCE_IMAGES
    return "; ".join(i.describe() for i in images)


def check_image_uri(uri: str, role: Role) -> ContainerImage | None:
    """Validate an ``image_uri=`` override before anything is uploaded; return the known image or None.

    Refused (:class:`ConfigError`): an image whose Python is older than the pinned stack needs, read from
    the table of retired images or from a ``pyXY`` tag. Warned (:class:`UntestedImageWarning`): any other
    image not in the table, since our code has not been run in it.
    """
    if not uri or not isinstance(uri, str):
        raise ConfigError(f"image_uri must be a container image URI, got {uri!r}")
    repository, tag = _split_uri(uri)
    for image in IMAGES:
        if image.repository == repository and image.tag == tag:
            if image.role != role:
                warnings.warn(f"{image.describe()} is a {image.role} image, used here for {role}; untested.",
                              UntestedImageWarning, stacklevel=3)
            return image
    python: tuple[int, int] | None = None
    reason = ""
    for retired in _table().get("retired", []):
        if retired["repository"] == repository and retired["tag"] == tag:
            major, minor = (int(x) for x in str(retired["python"]).split("."))
            python, reason = (major, minor), retired.get("why", "")
    python = python or image_python(uri)
    if python is not None and python < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        raise ConfigError(
            f"The image {uri} runs Python {python[0]}.{python[1]}, but the pinned stack (diffusers, transformers) "
            f"needs Python >= {need}{': ' + reason if reason else ''}. Nothing was uploaded. Leave image_uri unset "
            f"for the tested default, or pick one of the tested {role} images: {_working(role)}."
        )
    warnings.warn(
        f"image_uri {uri} is not one of the {role} images our code was tested in ({_working(role)}); it may work "
        "if it has Python >= 3.11 and pip. See docs/sagemaker.md to run the container-parity test for it.",
        UntestedImageWarning, stacklevel=3,
    )
    return None
