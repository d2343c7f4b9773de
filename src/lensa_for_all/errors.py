"""Errors a user can cause, each saying what to do about it.

Everything the library raises on purpose derives from :class:`LensaError`, so an app can catch one
type and show the message to its user; the message is written for that user, not for a debugger.
"""

from __future__ import annotations

__all__ = [
    "LensaError",
    "PhotoSetError",
    "TooFewPhotosError",
    "ConfigError",
    "UsageError",
    "ModelNotFoundError",
    "TrainingError",
    "OutOfMemoryError",
    "DiskFullError",
    "UnsafeArchiveError",
    "PickleRefusedError",
    "AWSConfigurationError",
    "TrainingJobFailed",
    "CostLimitExceeded",
    "EndpointError",
    "MagicPromptUnavailable",
    "LikenessUnavailable",
    "GenerationError",
    "RunStateError",
    "RunInUseError",
]


class LensaError(Exception):
    """Base class: every error this library raises on purpose."""


class PhotoSetError(LensaError):
    """The photos cannot make a training set (too few usable photos, unreadable folder, ...)."""


class TooFewPhotosError(PhotoSetError):
    """Too few usable photos; ``report`` is the QC report (a ``QCReport``) saying why each file failed."""

    def __init__(self, message: str, *, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class ConfigError(LensaError, ValueError):
    """A setting is invalid; the message names the field and why."""


class UsageError(ConfigError):
    """A value names something that does not exist (a class, a style) or a required setting is missing.

    The command line exits with code 2 for it, as for any bad argument.
    """


class ModelNotFoundError(LensaError):
    """A base model or trained model cannot be found or is not the kind expected."""


class TrainingError(LensaError):
    """Training failed for a reason the user can act on."""


class OutOfMemoryError(TrainingError):
    """The GPU (or host) ran out of memory; the message lists the memory switches to try, in order."""


class DiskFullError(LensaError):
    """No space left where output is written."""


class UnsafeArchiveError(LensaError):
    """A tarball holds absolute paths, ``..``, links, devices or too many bytes; nothing was extracted."""


class PickleRefusedError(LensaError):
    """Weights in a pickle format were refused; pass ``allow_pickle=True`` only for files you trust."""


class AWSConfigurationError(LensaError):
    """Credentials, region, role or bucket are missing or unusable."""


class TrainingJobFailed(TrainingError):
    """A remote training job failed; carries the job's reason and the last log lines."""

    def __init__(self, message: str, *, job_name: str | None = None, reason: str | None = None,
                 log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.job_name = job_name
        self.reason = reason
        self.log_tail = list(log_tail or [])


class CostLimitExceeded(LensaError):
    """An estimated or running cost is over ``max_cost_usd``."""


class EndpointError(LensaError):
    """A SageMaker endpoint could not be created, invoked or deleted."""


class MagicPromptUnavailable(LensaError):
    """The MagicPrompt model is not cached and the Hub cannot be reached."""


class LikenessUnavailable(LensaError):
    """Face likeness needs the optional ``[likeness]`` extra (dlib and its face models), which is not installed."""


class GenerationError(LensaError):
    """Image generation failed for a reason the user can act on."""


class RunStateError(LensaError):
    """A run folder's state file is missing, corrupt or belongs to another run."""


class RunInUseError(RunStateError):
    """Another process holds the run (or output) folder; the message names it (pid, host, start time)."""
