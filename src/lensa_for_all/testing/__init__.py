"""Offline test kit: tiny random-weight models and synthetic photos built on disk, and an offline SageMaker.

The models load through the same ``from_pretrained`` code paths as real models, and
:mod:`lensa_for_all.testing.sagemaker` (``local_aws``, ``play_training_job``) runs SageMaker training jobs
on a local moto server, so tests, examples, the demo and apps' own tests exercise the real code without a
GPU, the Hugging Face Hub or AWS. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_tiny_sd", "make_tiny_gpt2", "make_clip_tokenizer", "make_photos", "TINY_SD_SIZES", "local_aws",
           "play_training_job", "OfflineSageMakerBackend"]

TINY_SD_SIZES = ("tiny", "small", "sd15")


def __getattr__(name: str) -> Any:
    if name in ("make_tiny_sd", "make_clip_tokenizer"):
        from . import tiny_sd

        return getattr(tiny_sd, name)
    if name == "make_tiny_gpt2":
        from .tiny_gpt2 import make_tiny_gpt2

        return make_tiny_gpt2
    if name == "make_photos":
        from .photos import make_photos

        return make_photos
    if name in ("local_aws", "play_training_job", "OfflineSageMakerBackend"):
        from . import sagemaker

        return getattr(sagemaker, name)
    raise AttributeError(f"module 'lensa_for_all.testing' has no attribute {name!r}")
