"""Hostile tarball members, shared by the safe-extraction tests of archives.py and the SageMaker download."""

from __future__ import annotations

import io
import tarfile

# (kind, the error message fragment safe_extract must raise for it)
HOSTILE_KINDS = [("abs", "absolute"), ("dotdot", r"'\.\.'"), ("sym", "link"), ("hard", "link"), ("dev", "device"),
                 ("big", "more than")]


def hostile_member(kind: str, *, big: int = 2048) -> tuple[tarfile.TarInfo, bytes | None]:
    """One member of the given kind; ``big`` is the size of the "big" member's data."""
    info = tarfile.TarInfo("x")
    data: bytes | None = b"data"
    if kind == "abs":
        info.name = "/tmp/lensa-evil"
    elif kind == "dotdot":
        info.name = "model/../../evil"
    elif kind == "sym":
        info.type, info.linkname, data = tarfile.SYMTYPE, "/etc/passwd", None
    elif kind == "hard":
        info.type, info.linkname, data = tarfile.LNKTYPE, "/etc/passwd", None
    elif kind == "dev":
        info.type, data = tarfile.CHRTYPE, None
    elif kind == "big":
        data = b"x" * big
    else:
        raise ValueError(kind)
    return info, data


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A gzipped tarball of ``members`` (data ``None`` for links and devices)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()
