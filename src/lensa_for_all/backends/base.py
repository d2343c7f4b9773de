"""Deprecated: split into :mod:`lensa_for_all.training.backend` and :mod:`lensa_for_all.training.progress`.

See ``lensa_for_all.moved``; ``lensa_for_all.backends`` still exports these names.
"""
from ..moved import warn_moved

warn_moved(__name__)

from ..training.backend import Backend, TrainingResult  # noqa: E402
from ..training.progress import (  # noqa: E402
    PROGRESS_PREFIX,
    ProgressCallback,
    TrainingProgress,
    format_progress_line,
    parse_progress_line,
)

__all__ = [
    "PROGRESS_PREFIX", "Backend", "ProgressCallback", "TrainingProgress", "TrainingResult",
    "format_progress_line", "parse_progress_line",
]
