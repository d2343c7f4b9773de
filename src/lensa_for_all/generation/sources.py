"""Where a trained model comes from: a local folder, a Hub id, or an ``s3://`` tarball cached locally.

A trained folder is either a full diffusers pipeline (``model_index.json``) or a LoRA
(``pytorch_lora_weights.safetensors`` + ``lensa_manifest.json`` naming its base model), as the
trainer writes them. Anything else is refused with a message saying what was expected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ..archives import safe_extract
from ..atomic import write_json_atomic
from ..errors import AWSConfigurationError, ModelNotFoundError

if TYPE_CHECKING:
    from ..families import ModelFamily

__all__ = ["LORA_WEIGHTS_NAME", "MANIFEST_NAME", "ModelFolder", "inspect_model_folder", "download_s3_model",
           "default_cache_dir", "is_hub_id", "hub_lora_snapshot", "pipeline_family", "lora_family"]

log = logging.getLogger(__name__)

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
MANIFEST_NAME = "lensa_manifest.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_SOURCE_MARKER = ".lensa_source.json"


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/"))


def default_cache_dir() -> Path:
    """``$LENSA_CACHE_DIR``, else ``$XDG_CACHE_HOME/lensa-for-all``, else ``~/.cache/lensa-for-all``."""
    env = os.environ.get("LENSA_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lensa-for-all"


@attrs.frozen
class ModelFolder:
    """A recognised trained-model folder."""

    path: Path
    kind: Literal["pipeline", "lora"]
    manifest: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def base_model(self) -> str | None:
        base = self.manifest.get("base_model")
        return str(base) if base else None


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST_NAME
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelNotFoundError(f"{file} is not valid JSON ({exc}); the training run may not have finished.") from exc
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"{file} should hold a JSON object.")
    return data


def inspect_model_folder(path: str | os.PathLike[str], *, base_model: str | None = None) -> ModelFolder:
    """Recognise ``path`` (or its single sub-folder, as in an extracted tarball) as a trained model."""
    path = Path(path)
    if not path.is_dir():
        raise ModelNotFoundError(f"{path} does not exist or is not a folder.")
    candidates = [path]
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1:
        candidates.append(subdirs[0])
    for folder in candidates:
        manifest = _read_manifest(folder)
        if (folder / "model_index.json").is_file():
            return ModelFolder(folder, "pipeline", manifest)
        if (folder / LORA_WEIGHTS_NAME).is_file():
            if not manifest.get("base_model") and not base_model:
                raise ModelNotFoundError(
                    f"{folder} holds LoRA weights but no {MANIFEST_NAME} naming its base model; pass "
                    "base_model='<hub id or folder>' to AvatarModel.load."
                )
            return ModelFolder(folder, "lora", manifest)
    raise ModelNotFoundError(
        f"{path} is not a trained model: expected a diffusers pipeline folder (with model_index.json) or a "
        f"LoRA folder (with {LORA_WEIGHTS_NAME} and {MANIFEST_NAME}), as `lensa-for-all train` writes."
    )


def pipeline_family(source: str, revision: str | None = None) -> ModelFamily | None:
    """The family of a pipeline folder or Hub id, from its ``model_index.json`` (the Hugging Face cache first);
    ``None`` when the index cannot be read (loading the model then says what is wrong)."""
    from ..families import detect_family

    path = Path(source)
    index_file: Path | None = path / "model_index.json" if path.exists() else None
    if index_file is None and is_hub_id(source):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "model_index.json", revision=revision)
        if not isinstance(cached, str):
            from ..prompts.magic import hub_unreachable

            if not hub_unreachable():
                _try_download(source, "model_index.json", revision)
                cached = try_to_load_from_cache(source, "model_index.json", revision=revision)
        index_file = Path(cached) if isinstance(cached, str) else None
    if index_file is None or not index_file.is_file():
        return None
    try:
        return detect_family(source, json.loads(index_file.read_text(encoding="utf-8")))
    except (ValueError, ModelNotFoundError):
        return None


def lora_family(manifest: Mapping[str, Any]) -> ModelFamily:
    """The family a LoRA was trained on, from its manifest (files written before SDXL support are SD 1.x/2.x)."""
    from ..families import FAMILIES, SD1

    return FAMILIES.get(str(manifest.get("model_family") or SD1.name), SD1)


def hub_lora_snapshot(repo_id: str, *, revision: str | None = None) -> Path | None:
    """The local snapshot folder of a Hub LoRA repository (``pytorch_lora_weights.safetensors`` + manifest).

    The Hugging Face cache is read first, so a repository downloaded once loads offline; the Hub is
    asked only when it answers. ``None`` means the repository holds no such LoRA (a full pipeline,
    say), and the caller loads it as a pipeline.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    from ..prompts.magic import hub_unreachable

    cached = try_to_load_from_cache(repo_id, LORA_WEIGHTS_NAME, revision=revision)
    if isinstance(cached, str):
        folder = Path(cached).parent
        if not (folder / MANIFEST_NAME).is_file() and not hub_unreachable():
            _try_download(repo_id, MANIFEST_NAME, revision)
        return folder
    if hub_unreachable():
        return None
    try:
        weights = hf_hub_download(repo_id, LORA_WEIGHTS_NAME, revision=revision)
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None
    except (HfHubHTTPError, OSError) as exc:
        log.debug("Could not look for a LoRA in %s: %s", repo_id, exc)
        return None
    _try_download(repo_id, MANIFEST_NAME, revision)
    folder = Path(weights).parent
    kohya = _read_manifest(folder).get("kohya_weights") if (folder / MANIFEST_NAME).is_file() else None
    if kohya:  # its hash goes into the PNG metadata, so A1111 finds the same LoRA
        _try_download(repo_id, str(kohya), revision)
    return folder


def _try_download(repo_id: str, filename: str, revision: str | None) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        hf_hub_download(repo_id, filename, revision=revision)
    except (HfHubHTTPError, OSError) as exc:
        log.debug("No %s in %s: %s", filename, repo_id, exc)


def _parse_s3(uri: str) -> tuple[str, str]:
    m = re.match(r"^s3://([^/]+)/(.+)$", uri)
    if not m:
        raise ModelNotFoundError(f"{uri!r} is not an s3://bucket/key URI.")
    return m.group(1), m.group(2)


def download_s3_model(uri: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download and safely extract ``s3://bucket/key.tar.gz`` once; later calls reuse the cached folder.

    The cache entry is keyed by the URI and re-downloaded only when the object's ETag changes.
    boto3 honours ``AWS_ENDPOINT_URL``, so S3-compatible stores (and moto in tests) work.
    """
    bucket, key = _parse_s3(uri)
    try:
        import boto3
        import botocore.exceptions as bexc
    except ImportError as exc:
        raise AWSConfigurationError(
            'Loading a model from s3:// needs boto3: pip install "lensa-for-all[aws]"'
        ) from exc
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "models"
    entry = root / hashlib.sha256(uri.encode()).hexdigest()[:20]
    marker = entry / _SOURCE_MARKER
    cached = json.loads(marker.read_text()) if marker.is_file() else None
    s3 = boto3.client("s3")
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except bexc.NoCredentialsError as exc:
        raise AWSConfigurationError(
            "No AWS credentials found to read the model from S3; run `aws configure` or set AWS_PROFILE."
        ) from exc
    except bexc.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise ModelNotFoundError(f"{uri} does not exist (S3 says {code}). Check the bucket and key.") from exc
        if code in ("403", "AccessDenied"):
            raise AWSConfigurationError(f"Access to {uri} was denied; check the IAM permissions.") from exc
        raise ModelNotFoundError(f"Cannot read {uri}: {exc}") from exc
    except bexc.EndpointConnectionError as exc:
        if cached:
            log.warning("S3 unreachable; using the cached copy of %s", uri)
            return Path(cached["model_dir"])
        raise ModelNotFoundError(f"Cannot reach S3 to download {uri} and no cached copy exists.") from exc
    etag = str(head.get("ETag", "")).strip('"')
    if cached and cached.get("etag") == etag and Path(cached["model_dir"]).is_dir():
        log.info("Using cached %s", uri)
        return Path(cached["model_dir"])
    entry.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download.", suffix=".tar.gz", dir=entry)
    os.close(fd)
    try:
        log.info("Downloading %s (%.1f MB)", uri, head.get("ContentLength", 0) / 1e6)
        s3.download_file(bucket, key, tmp_name)
        model_dir = safe_extract(tmp_name, entry / "model")
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    write_json_atomic(marker, {"uri": uri, "etag": etag, "model_dir": str(model_dir)})
    return model_dir


def clear_cached_model(uri: str, cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Forget the cached copy of ``uri`` (the next load downloads it again)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "models"
    shutil.rmtree(root / hashlib.sha256(uri.encode()).hexdigest()[:20], ignore_errors=True)
