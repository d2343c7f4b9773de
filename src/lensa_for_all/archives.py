"""Safe extraction of model tarballs (``model.tar.gz`` from SageMaker or ``s3://`` URIs).

A tarball from a bucket is untrusted input: every member is checked *before* anything is written,
so a hostile archive is refused whole instead of half-extracted.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from .errors import UnsafeArchiveError

__all__ = ["DEFAULT_MAX_BYTES", "check_members", "safe_extract"]

DEFAULT_MAX_BYTES = 64 * 1024**3  # a full SD pipeline is ~5 GB; anything near this is suspicious


def check_members(tar: tarfile.TarFile, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[tarfile.TarInfo]:
    """Return the members if all are safe; raise :class:`UnsafeArchiveError` naming the first bad one."""
    members = tar.getmembers()
    total = 0
    for m in members:
        name = m.name
        path = PurePosixPath(name)
        if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchiveError(f"Refused archive: member {name!r} has an absolute path.")
        if ".." in path.parts:
            raise UnsafeArchiveError(f"Refused archive: member {name!r} points outside the folder ('..').")
        if m.issym() or m.islnk():
            raise UnsafeArchiveError(f"Refused archive: member {name!r} is a link; model archives hold only files.")
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(
                f"Refused archive: member {name!r} is a device, FIFO or other special file."
            )
        total += max(m.size, 0)
        if total > max_bytes:
            raise UnsafeArchiveError(
                f"Refused archive: it expands to more than {max_bytes / 1024**3:.1f} GiB "
                "(raise max_bytes if this model really is that large)."
            )
    return members


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Extract ``archive`` into ``dest`` after checking every member; all or nothing.

    Files go to a temporary folder beside ``dest`` which is renamed into place at the end, so an
    interrupted extraction never leaves a partial model where a complete one is expected.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeArchiveError(f"Cannot read {archive} as a tar archive: {exc}") from exc
    with tar:
        members = check_members(tar, max_bytes=max_bytes)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            for m in members:
                target = tmp.joinpath(*PurePosixPath(m.name).parts)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:  # pragma: no cover - regular files always have data
                    raise UnsafeArchiveError(f"Refused archive: member {m.name!r} has no data.")
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest
