"""Safe extraction of model tarballs (``model.tar.gz`` from SageMaker or ``s3://`` URIs).

A tarball from a bucket is untrusted input: every member is checked *before* anything is written,
so a hostile archive is refused whole instead of half-extracted.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from .atomic import umask_mode
from .errors import UnsafeArchiveError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_MEMBERS", "check_members", "safe_extract"]

DEFAULT_MAX_BYTES = 64 * 1024**3  # a full SD pipeline is ~5 GB; anything near this is suspicious
DEFAULT_MAX_MEMBERS = 10_000  # a full SD pipeline folder has about 30 files


def check_members(tar: tarfile.TarFile, *, max_bytes: int = DEFAULT_MAX_BYTES,
                  max_members: int = DEFAULT_MAX_MEMBERS) -> list[tarfile.TarInfo]:
    """Return the members if all are safe; raise :class:`UnsafeArchiveError` naming the first bad one.

    Beyond paths and member types, a file may not share its name with a folder (or another file), and
    the archive may hold at most ``max_members`` members. A truncated or corrupt archive is refused too.
    """
    members: list[tarfile.TarInfo] = []
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    total = 0
    try:
        for m in tar:
            members.append(m)
            if len(members) > max_members:
                raise UnsafeArchiveError(
                    f"Refused archive: it holds more than {max_members} members; a model has a few dozen files "
                    "(raise max_members if this one really has more).")
            total = _check_member(m, files, dirs, total, max_bytes)
    except (EOFError, tarfile.TarError, zlib.error, OSError) as exc:
        raise UnsafeArchiveError(f"Refused archive: it is truncated or corrupt ({exc}); download it again.") \
            from exc
    return members


def _check_member(m: tarfile.TarInfo, files: set[tuple[str, ...]], dirs: set[tuple[str, ...]], total: int,
                  max_bytes: int) -> int:
    """Check one member against the ones before it; return the running byte total."""
    name = m.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"Refused archive: member {name!r} has an absolute path.")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"Refused archive: member {name!r} points outside the folder ('..').")
    if m.issym() or m.islnk():
        raise UnsafeArchiveError(f"Refused archive: member {name!r} is a link; model archives hold only files.")
    if not (m.isfile() or m.isdir()):
        raise UnsafeArchiveError(f"Refused archive: member {name!r} is a device, FIFO or other special file.")
    parts = tuple(p for p in path.parts if p != ".")
    if m.isfile():
        if not parts:
            raise UnsafeArchiveError(f"Refused archive: file member {name!r} has no name (it would be the folder).")
        if parts in files or parts in dirs:
            raise UnsafeArchiveError(f"Refused archive: member {name!r} appears twice (or as a file and a folder).")
    elif parts in files:
        raise UnsafeArchiveError(f"Refused archive: member {name!r} is both a file and a folder.")
    for i in range(1, len(parts)):
        if parts[:i] in files:
            raise UnsafeArchiveError(f"Refused archive: member {name!r} lies under {'/'.join(parts[:i])!r}, "
                                     "which is a file.")
        dirs.add(parts[:i])
    (files if m.isfile() else dirs).add(parts)
    total += max(m.size, 0)
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"Refused archive: it expands to more than {max_bytes / 1024**3:.1f} GiB "
            "(raise max_bytes if this model really is that large)."
        )
    return total


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_members: int = DEFAULT_MAX_MEMBERS) -> Path:
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
        members = check_members(tar, max_bytes=max_bytes, max_members=max_members)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            try:
                _extract_members(tar, members, tmp)
                _read_to_end(tar)
            except (EOFError, tarfile.TarError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
                raise UnsafeArchiveError(f"Refused archive {archive}: it is truncated or corrupt ({exc}); download "
                                         "it again. Nothing was extracted.") from exc
            os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes it 0700
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _extract_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    for m in members:
        target = dest.joinpath(*(p for p in PurePosixPath(m.name).parts if p != "."))
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(m)
        if src is None:  # pragma: no cover - regular files always have data
            raise UnsafeArchiveError(f"Refused archive: member {m.name!r} has no data.")
        with src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        os.chmod(target, umask_mode())


def _read_to_end(tar: tarfile.TarFile) -> None:
    """Read what follows the last member, so a compressed stream's checksum (gzip's CRC) is verified."""
    stream = tar.fileobj
    if stream is not None:
        while stream.read(1 << 20):
            pass
