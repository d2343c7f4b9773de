"""Generating avatar packs from a trained model: loading, schedulers, devices and the pack format."""

from __future__ import annotations

from .job import Job
from .model import AvatarModel
from .pack import Avatar, AvatarPack, parse_parameters, read_png_parameters
from .schedulers import DEFAULT_SCHEDULER, scheduler_names

__all__ = ["AvatarModel", "Avatar", "AvatarPack", "Job", "DEFAULT_SCHEDULER", "scheduler_names", "parse_parameters",
           "read_png_parameters"]
