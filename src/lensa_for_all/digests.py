"""SHA-256 of files, streamed: the one way the library fingerprints photos, checkpoints, models and uploads."""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]

_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike[str], *, offset: int = 0) -> str:
    """The hex SHA-256 of the file's bytes from ``offset`` on, read 1 MiB at a time (models are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
