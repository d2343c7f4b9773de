"""Where training and serving run beyond this machine: Amazon SageMaker (jobs, S3, endpoints, images, cost).

The interface a backend implements is defined by the training code that calls it
(:mod:`lensa_for_all.training.backend`); it is re-exported here for backend authors. ``LocalBackend``,
the default, lives in :mod:`lensa_for_all.training.local`.
"""

from ..training.backend import Backend, JobStartedCallback, TrainingResult
from ..training.progress import (
    PROGRESS_PREFIX,
    ProgressCallback,
    TrainingProgress,
    format_progress_line,
    parse_progress_line,
)

__all__ = [
    "PROGRESS_PREFIX", "Backend", "JobStartedCallback", "ProgressCallback", "TrainingProgress", "TrainingResult",
    "format_progress_line", "parse_progress_line",
]
