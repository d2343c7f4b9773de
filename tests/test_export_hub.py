"""``AvatarModel.load("user/repo")`` of a LoRA repository, from a local Hugging Face cache, offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from export_helpers import make_lora_export
from lensa_for_all.errors import ModelNotFoundError
from lensa_for_all.generation import AvatarModel

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_repo(cache: Path, repo_id: str, files: list[Path]) -> Path:
    """A repository in the Hub cache's own layout: refs/main -> snapshots/<commit>/<file> -> blobs/<sha256>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir()
    snapshot.mkdir(parents=True)
    for file in files:
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.fixture(scope="module")
def lora_export(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_export(tiny_sd, tmp_path_factory.mktemp("lora") / "zwx-dog")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_lora_repo_loads_on_its_base_model_offline(lora_export: Path, hub_cache: Path) -> None:
    hub_cache_repo(hub_cache, "someone/zwx-dog-lora",
                   [lora_export / "pytorch_lora_weights.safetensors", lora_export / "lensa_manifest.json",
                    lora_export / "README.md"])
    from_hub = AvatarModel.load("someone/zwx-dog-lora")
    local = AvatarModel.load(lora_export)
    assert from_hub.is_lora and from_hub.name == "someone/zwx-dog-lora"
    assert (from_hub.token, from_hub.subject_class) == ("zwx", "dog")
    (a,) = from_hub.generate("zwx dog", 1, seed=9, num_inference_steps=2)
    (b,) = local.generate("zwx dog", 1, seed=9, num_inference_steps=2)
    (off,) = from_hub.generate("zwx dog", 1, seed=9, num_inference_steps=2, lora_scale=0.0)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(off.image))  # the LoRA is really applied


def test_a_lora_repo_without_manifest_needs_a_base_model(lora_export: Path, tiny_sd: Path, hub_cache: Path) -> None:
    hub_cache_repo(hub_cache, "someone/bare-lora", [lora_export / "pytorch_lora_weights.safetensors"])
    with pytest.raises(ModelNotFoundError, match="base_model="):
        AvatarModel.load("someone/bare-lora")
    model = AvatarModel.load("someone/bare-lora", base_model=str(tiny_sd))
    assert model.is_lora


def test_an_uncached_repo_offline_is_a_clear_error(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="offline"):
        AvatarModel.load("someone/not-downloaded")
