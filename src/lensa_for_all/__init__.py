"""lensa-for-all: Lensa-style avatars from a handful of photos, by DreamBooth fine-tuning.

Public names are imported lazily so that ``import lensa_for_all`` and ``lensa-for-all --help`` stay
fast and never import torch, diffusers, transformers, boto3 or sagemaker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import *  # noqa: F403  (the errors are light and part of the public API)
from .errors import __all__ as _error_names
from .version import __version__

# public name -> module that defines it. A name is listed only once its class exists.
_LAZY: dict[str, str] = {
    "TrainingConfig": "lensa_for_all.config",
    "DreamBoothTrainer": "lensa_for_all.training.trainer",
    "LocalBackend": "lensa_for_all.training.local",
    "TrainingResult": "lensa_for_all.training.backend",
    "AvatarModel": "lensa_for_all.generation.model",
    "AvatarPack": "lensa_for_all.generation.pack",
    "Avatar": "lensa_for_all.generation.pack",
    "PromptGenerator": "lensa_for_all.prompts.generator",
    "Prompt": "lensa_for_all.prompts.generator",
    "SageMakerBackend": "lensa_for_all.backends.sagemaker",
    "Endpoint": "lensa_for_all.backends.endpoint",
    "PhotoSet": "lensa_for_all.photos",
    "Pipeline": "lensa_for_all.pipeline",
    "PipelineResult": "lensa_for_all.pipeline",
}

__all__ = ["__version__", *_LAZY, *_error_names]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    pass


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lensa_for_all' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
