"""S3 transfers for a run: parallel multipart uploads that skip unchanged files, downloads with progress.

Every request names ``ExpectedBucketOwner`` and uploads ask for server-side encryption (SSE-S3, or
SSE-KMS with a key). A file counts as unchanged when an object of the same size carries the file's
SHA-256 in its metadata, so re-running a job after a failure re-uploads nothing.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from ..atomic import atomic_path
from ..digests import file_sha256
from ..errors import AWSConfigurationError, LensaError

__all__ = ["S3Uri", "S3Store", "SyncReport", "BytesCallback", "deterministic_tarball", "file_sha256"]

SHA_METADATA_KEY = "lensa-sha256"

BytesCallback = Callable[[int], None]  # called with the number of bytes moved since the last call


@attrs.frozen
class S3Uri:
    """``s3://bucket/key`` as a value: parse, print, join."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://") or len(uri) <= 5:
            raise LensaError(f"Not an S3 URI: {uri!r} (expected s3://bucket/key)")
        bucket, _, key = uri[5:].partition("/")
        if not bucket:
            raise LensaError(f"Not an S3 URI: {uri!r} (no bucket)")
        return cls(bucket, key)

    def join(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Uri(self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@attrs.frozen
class SyncReport:
    """What :meth:`S3Store.sync_dir` did."""

    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    deleted: tuple[str, ...]
    bytes_uploaded: int


def deterministic_tarball(src: Path, dest: Path, *, extra: Iterable[tuple[str, Path]] = ()) -> Path:
    """Write ``src``'s files (plus ``extra`` (arcname, file) pairs) as a ``.tar.gz`` whose bytes depend only
    on the files' names and contents: sorted, zero mtimes, no owners. An unchanged source dir thus gives an
    identical tarball, which the upload then skips.
    """
    by_name = {p.relative_to(src).as_posix(): p for p in src.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    by_name.update(dict(extra))  # an extra file replaces a source file of the same name
    files = sorted(by_name.items())
    with atomic_path(dest) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, path in files:
            info = tarfile.TarInfo(arcname)
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return dest


class S3Store:
    """Transfers into and out of one bucket owned by ``owner`` (an account id)."""

    def __init__(self, client: Any, bucket: str, *, owner: str, kms_key_id: str | None = None,
                 max_concurrency: int = 8, multipart_threshold: int = 64 * 1024 * 1024) -> None:
        self.client = client
        self.bucket = bucket
        self.owner = owner
        self.kms_key_id = kms_key_id
        self.max_concurrency = max_concurrency
        self.multipart_threshold = multipart_threshold

    # ---- helpers -----------------------------------------------------------------------------------

    def uri(self, key: str) -> S3Uri:
        return S3Uri(self.bucket, key)

    def _encryption_args(self) -> dict[str, str]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.multipart_threshold, max_concurrency=self.max_concurrency,
                              multipart_chunksize=self.multipart_threshold)

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, or ``None`` when there is no such object."""
        from botocore.exceptions import ClientError

        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key, ExpectedBucketOwner=self.owner))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            if code in ("403", "AccessDenied"):
                raise AWSConfigurationError(
                    f"Access denied to s3://{self.bucket}/{key}: your credentials (or the bucket owner check "
                    f"for account {self.owner}) do not allow it."
                ) from exc
            raise

    def is_unchanged(self, path: Path, key: str, sha256: str | None = None) -> bool:
        head = self.head(key)
        if head is None or int(head.get("ContentLength", -1)) != path.stat().st_size:
            return False
        return head.get("Metadata", {}).get(SHA_METADATA_KEY) == (sha256 or file_sha256(path))

    # ---- uploads -----------------------------------------------------------------------------------

    def upload_file(self, path: Path, key: str, *, on_bytes: BytesCallback | None = None,
                    skip_unchanged: bool = True) -> bool:
        """Upload ``path`` to ``key``; return ``False`` when it was skipped as unchanged."""
        path = Path(path)
        sha = file_sha256(path)
        if skip_unchanged and self.is_unchanged(path, key, sha):
            if on_bytes:
                on_bytes(path.stat().st_size)
            return False
        extra = {**self._encryption_args(), "ExpectedBucketOwner": self.owner,
                 "Metadata": {SHA_METADATA_KEY: sha}}
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self._transfer_config(),
                                Callback=on_bytes)
        return True

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> S3Uri:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                               ExpectedBucketOwner=self.owner, **self._encryption_args())
        return self.uri(key)

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, ExpectedBucketOwner=self.owner):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def delete_keys(self, keys: Iterable[str]) -> None:
        batch = [{"Key": k} for k in keys]
        for i in range(0, len(batch), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch[i:i + 1000], "Quiet": True},
                                       ExpectedBucketOwner=self.owner)

    def sync_dir(self, local_dir: Path, prefix: str, *, on_bytes: BytesCallback | None = None,
                 delete_extra: bool = True) -> SyncReport:
        """Make ``prefix/`` hold exactly ``local_dir``'s files: upload new and changed ones in parallel,
        skip unchanged ones, delete objects whose file is gone (so a job never trains on a removed photo).
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise LensaError(f"Input folder {local_dir} does not exist")
        prefix = prefix.rstrip("/") + "/"
        files = {prefix + p.relative_to(local_dir).as_posix(): p for p in sorted(local_dir.rglob("*")) if p.is_file()}
        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            done = dict(zip(files, pool.map(lambda kv: self.upload_file(kv[1], kv[0], on_bytes=on_bytes),
                                            files.items()), strict=True))
        deleted: list[str] = []
        if delete_extra:
            deleted = [k for k in self.list_keys(prefix) if k not in files]
            if deleted:
                self.delete_keys(deleted)
        uploaded = tuple(k for k, up in done.items() if up)
        return SyncReport(uploaded=uploaded, skipped=tuple(k for k, up in done.items() if not up),
                          deleted=tuple(deleted), bytes_uploaded=sum(files[k].stat().st_size for k in uploaded))

    # ---- downloads ---------------------------------------------------------------------------------

    def download_file(self, key: str, dest: Path, *, on_bytes: BytesCallback | None = None) -> Path:
        """Download ``key`` to ``dest`` atomically (a reader never sees half a file)."""
        if self.head(key) is None:
            raise LensaError(f"s3://{self.bucket}/{key} does not exist")
        with atomic_path(dest) as tmp:
            self.client.download_file(self.bucket, key, str(tmp), ExtraArgs={"ExpectedBucketOwner": self.owner},
                                      Config=self._transfer_config(), Callback=on_bytes)
        return Path(dest)

    def download_prefix(self, prefix: str, dest: Path) -> list[Path]:
        """Download every object under ``prefix/`` into ``dest`` keeping relative paths (refusing ``..``)."""
        prefix = prefix.rstrip("/") + "/"
        out: list[Path] = []
        for key in self.list_keys(prefix):
            rel = key[len(prefix):]
            if not rel or rel.endswith("/"):
                continue
            parts = Path(rel).parts
            if ".." in parts or Path(rel).is_absolute():
                raise LensaError(f"Refusing S3 key {key!r}: it points outside {dest}")
            out.append(self.download_file(key, Path(dest).joinpath(*parts)))
        return out

    def read_bytes(self, key: str) -> bytes:
        resp = self.client.get_object(Bucket=self.bucket, Key=key, ExpectedBucketOwner=self.owner)
        body = resp["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()
