"""A Hugging Face token for an endpoint, kept out of the model's description.

A SageMaker model's environment is shown in plain text by ``describe_model`` (and in the console) to
anyone allowed to list models. So the token is not put there: :func:`stash_hf_token` writes it as an
encrypted S3 object (SSE-KMS with the backend's ``kms_key_id``, else SSE-S3) beside the run's other
objects, and the environment gets only its ``s3://`` URI. The endpoint's handler calls
:func:`load_hf_token` before loading the model; its execution role, which already reads the model
tarball from that bucket, reads the token the same way. Deleting the object revokes nothing: revoke
the token on the Hub if it leaks.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import MutableMapping
from typing import Any

__all__ = ["HF_TOKEN_URI_ENV", "stash_hf_token", "load_hf_token"]

HF_TOKEN_URI_ENV = "LENSA_HF_TOKEN_S3_URI"


def stash_hf_token(store: Any, prefix: str, token: str) -> dict[str, str]:
    """Write ``token`` encrypted under ``<prefix>/secrets/`` in ``store`` (an ``S3Store``); return the
    endpoint environment that points at it (no token in it)."""
    key = f"{prefix.strip('/')}/secrets/{secrets.token_hex(8)}/hf_token".lstrip("/")
    uri = store.put_bytes(key, token.encode("utf-8"), content_type="text/plain")
    return {HF_TOKEN_URI_ENV: str(uri)}


def load_hf_token(environ: MutableMapping[str, str] | None = None, *, s3_client: Any = None) -> bool:
    """In the endpoint: read the token the URI in ``LENSA_HF_TOKEN_S3_URI`` names into ``HF_TOKEN``.

    Returns whether a token was loaded; an ``HF_TOKEN`` already set wins.
    """
    env = os.environ if environ is None else environ
    uri = env.get(HF_TOKEN_URI_ENV)
    if not uri or env.get("HF_TOKEN"):
        return False
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise RuntimeError(f"{HF_TOKEN_URI_ENV}={uri!r} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    env["HF_TOKEN"] = body.decode("utf-8").strip()
    return True
