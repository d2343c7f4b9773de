"""Photos in, a clean training set out: reading, checking, face-aware cropping and the QC report."""

from __future__ import annotations

from .faces import Box
from .photoset import PERSON_CLASSES, Photo, PhotoSet, Rejection
from .report import FileReport, QCReport

__all__ = ["PERSON_CLASSES", "Box", "FileReport", "Photo", "PhotoSet", "QCReport", "Rejection"]
