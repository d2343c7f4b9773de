"""What the user is told when Ctrl-C interrupts the wait on a SageMaker training job.

A training job bills by the second whether or not anyone watches it, so each message says plainly
whether the job was stopped or is still running, names it, and gives the exact command to stop it or
to pick it up again. :class:`~lensa_for_all.backends.sagemaker.SageMakerBackend` prints these to
stderr whatever the verbosity (``-q``, ``Pipeline(progress=False)``).
"""

from __future__ import annotations

import shlex

__all__ = ["stop_command", "job_stopped", "job_left_running", "job_not_stopped"]


def stop_command(job_name: str, region: str | None) -> str:
    """The AWS CLI command that stops ``job_name``."""
    region_part = f" --region {shlex.quote(region)}" if region else ""
    return f"aws sagemaker stop-training-job --training-job-name {shlex.quote(job_name)}{region_part}"


def _reattach(job_name: str) -> str:
    return (f"run the same `lensa-for-all run` command (or Pipeline.run) again, which re-attaches to it, or "
            f"in Python SageMakerBackend().attach({job_name!r})")


def job_stopped(job_name: str, region: str | None) -> str:
    return (f"Interrupted: SageMaker training job {job_name} was asked to STOP; it no longer bills once it shows "
            f"'Stopped'. Its checkpoints stay in S3: to continue, {_reattach(job_name)}.")


def job_left_running(job_name: str, region: str | None) -> str:
    return (f"Interrupted: SageMaker training job {job_name} is STILL RUNNING on AWS and billing. "
            f"To stop it: {stop_command(job_name, region)} . To follow it again: {_reattach(job_name)}.")


def job_not_stopped(job_name: str, region: str | None, error: BaseException) -> str:
    return (f"Interrupted: could not stop SageMaker training job {job_name} ({error}); it may STILL BE RUNNING "
            f"and billing. To stop it: {stop_command(job_name, region)} (or in the SageMaker console).")
