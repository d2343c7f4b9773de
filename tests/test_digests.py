"""digests.file_sha256: the library's one streamed file hash (photos, checkpoints, S3 uploads, A1111 hashes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lensa_for_all.digests import file_sha256


def test_streams_across_blocks_and_hashes_from_an_offset(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # 2.2 MiB: three 1 MiB blocks, the last one partial
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path, offset=1000) == hashlib.sha256(data[1000:]).hexdigest()
    path.write_bytes(b"")
    assert file_sha256(path) == hashlib.sha256(b"").hexdigest()
