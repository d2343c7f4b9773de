"""AUTOMATIC1111's conventions for image metadata: short model hashes, LoRA tags, sampler + schedule type.

A1111 matches a PNG's ``Model hash`` against its checkpoints (the first 10 hex digits of the file's
SHA-256) and a ``Lora hashes`` entry against its LoRAs (the first 12 hex digits of the kohya/addnet
hash: SHA-256 of a ``.safetensors`` file's tensor data, after its JSON header, so editing metadata
keeps the hash). The prompt carries the LoRA as ``<lora:NAME:WEIGHT>``, NAME being the file's stem.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..digests import file_sha256

__all__ = ["ModelHashes", "model_hash", "lora_hash", "hashes_for", "sampler_and_schedule", "lora_tag",
           "strip_lora_tag", "parse_lora_hashes", "format_lora_hashes"]

log = logging.getLogger(__name__)

LORA_HASH_LENGTH = 12

# Our scheduler -> A1111 >= 1.9 (Sampler, Schedule type). "Automatic" is the sampler's own default
# schedule; DPM++ 2M's default there is Karras, so our non-Karras DPM++ 2M is written as "Uniform"
# (the model's own discrete sigmas).
_SPLIT = {
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
    "dpmpp_2m": ("DPM++ 2M", "Uniform"),
}


def model_hash(path: str | os.PathLike[str]) -> str:
    """A1111's checkpoint ``Model hash``: the first 10 hex digits of the whole file's SHA-256."""
    from ..training.single_file import a1111_model_hash

    return a1111_model_hash(path)


def lora_hash(path: str | os.PathLike[str]) -> str:
    """A1111's LoRA short hash: the first 12 hex digits of the SHA-256 of the tensor data (after the header)."""
    path = Path(path)
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
    return file_sha256(path, offset=8 + header_len)[:LORA_HASH_LENGTH]


@attrs.frozen
class ModelHashes:
    """What A1111 needs to find the model an image was made with."""

    model_hash: str | None = None
    lora_name: str | None = None
    lora_hash: str | None = None


def hashes_for(folder: Path | None, manifest: Mapping[str, Any]) -> ModelHashes:
    """Hashes of a trained folder's single-file exports (the checkpoint, or the kohya LoRA), where present."""
    if folder is None:
        return ModelHashes()

    def existing(key: str) -> Path | None:
        name = manifest.get(key)
        path = folder / str(name) if name else None
        return path if path is not None and path.is_file() else None

    checkpoint = existing("checkpoint_weights")
    kohya = existing("kohya_weights")
    return ModelHashes(
        model_hash=_checkpoint_hash(checkpoint, manifest.get("checkpoint_hash")) if checkpoint is not None else None,
        lora_name=kohya.stem if kohya is not None else None,
        lora_hash=lora_hash(kohya) if kohya is not None else None,
    )


def _checkpoint_hash(path: Path, recorded: Any) -> str:
    """The hash training recorded for the file (2 GB take seconds to hash), unless the file's size changed."""
    if isinstance(recorded, Mapping) and recorded.get("size") == path.stat().st_size and recorded.get("sha256_10"):
        return str(recorded["sha256_10"])
    log.info("Hashing %s for the PNG metadata", path.name)
    return model_hash(path)


def sampler_and_schedule(scheduler: str) -> tuple[str, str]:
    """A1111's ``Sampler`` and ``Schedule type`` values for one of our scheduler names."""
    from .schedulers import a1111_name, canonical_name

    key = canonical_name(scheduler)
    return _SPLIT.get(key, (a1111_name(key), "Automatic"))


def _weight(weight: float) -> str:
    return f"{float(weight):g}" if float(weight) != int(weight) else f"{float(weight):.1f}"


def lora_tag(name: str, weight: float) -> str:
    """``<lora:NAME:WEIGHT>``, the prompt syntax A1111 and ComfyUI prompt-control read."""
    return f"<lora:{name}:{_weight(weight)}>"


def strip_lora_tag(prompt: str, name: str) -> str:
    """``prompt`` without the trailing ``<lora:NAME:...>`` tag :func:`lora_tag` appended."""
    return re.sub(r"\s*<lora:" + re.escape(name) + r":[^>]*>\s*$", "", prompt)


def format_lora_hashes(entries: Mapping[str, str]) -> str:
    """``NAME: HASH, NAME2: HASH2`` (names lose ``:`` and ``,``, as A1111 writes them)."""
    return ", ".join(f"{re.sub('[:,]', '', name)}: {h}" for name, h in entries.items())


def parse_lora_hashes(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        name, sep, h = item.partition(":")
        if sep and name.strip():
            out[name.strip()] = h.strip()
    return out
