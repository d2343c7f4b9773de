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


def test_online_a_lora_repo_is_fetched_with_its_manifest_and_kohya_file(
        lora_export: Path, hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub answering (played by a fake ``hf_hub_download`` that fills the cache as the real one does)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    import lensa_for_all.prompts.magic as magic

    served = {p.name: p for p in (lora_export / "pytorch_lora_weights.safetensors",
                                  lora_export / "lensa_manifest.json", lora_export / "zwx_lora_kohya.safetensors")}
    asked: list[str] = []

    def fake_download(repo_id: str, filename: str, *, revision: str | None = None) -> str:
        asked.append(filename)
        if filename not in served:
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        snapshot = hub_cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / COMMIT
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot.parent.parent / "refs").mkdir(exist_ok=True)
        (snapshot.parent.parent / "refs" / "main").write_text(COMMIT)
        (snapshot / filename).write_bytes(served[filename].read_bytes())
        return str(snapshot / filename)

    monkeypatch.setattr(magic, "hub_unreachable", lambda: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = AvatarModel.load("someone/online-lora")
    assert model.is_lora and model.hashes.lora_name == "zwx_lora_kohya"
    assert asked == ["pytorch_lora_weights.safetensors", "lensa_manifest.json", "zwx_lora_kohya.safetensors"]
