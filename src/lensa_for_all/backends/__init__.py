"""Where the training entry point runs: this machine (``LocalBackend``) or SageMaker (``SageMakerBackend``)."""

from .base import (
    PROGRESS_PREFIX,
    Backend,
    ProgressCallback,
    TrainingProgress,
    TrainingResult,
    format_progress_line,
    parse_progress_line,
)

__all__ = [
    "PROGRESS_PREFIX", "Backend", "ProgressCallback", "TrainingProgress", "TrainingResult",
    "format_progress_line", "parse_progress_line",
]
