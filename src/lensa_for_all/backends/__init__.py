"""Where the training entry point runs: this machine (``LocalBackend``) or SageMaker (``SageMakerBackend``)."""

from .base import Backend, ProgressCallback, TrainingProgress, TrainingResult

__all__ = ["Backend", "ProgressCallback", "TrainingProgress", "TrainingResult"]
