"""The kohya LoRA file's ``ss_*`` metadata: what A1111's LoRA tab reads to file and describe it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export_helpers import make_lora_export


@pytest.fixture(scope="module")
def lora_export(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_export(tiny_sd, tmp_path_factory.mktemp("lora") / "zwx-dog")


def _header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def test_kohya_file_carries_the_training_metadata(lora_export: Path) -> None:
    manifest = json.loads((lora_export / "lensa_manifest.json").read_text())
    meta = _header(lora_export / manifest["kohya_weights"])
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert int(meta["ss_network_dim"]) == manifest["lora_rank"]
    assert float(meta["ss_network_alpha"]) == manifest["lora_alpha"]
    assert meta["ss_resolution"] == "(64, 64)"
    assert meta["ss_steps"] == "7" and meta["ss_num_train_images"] == "5"
    tags = json.loads(meta["ss_tag_frequency"])
    assert tags == {"1_zwx dog": {"zwx": 5, "a photo of zwx dog": 5}}
    assert meta["modelspec.trigger_phrase"] == "zwx"
    # a local base folder's path never leaks into the file; only its name
    assert meta["ss_sd_model_name"] == Path(manifest["base_model"]).name


def test_sshs_model_hash_is_the_hash_a1111_computes_from_the_file(lora_export: Path) -> None:
    import hashlib

    path = lora_export / "zwx_lora_kohya.safetensors"
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    assert _header(path)["sshs_model_hash"] == hashlib.sha256(data[8 + header_len:]).hexdigest()


def test_v2_and_v_prediction_are_filed_under_sd2(tiny_sd: Path) -> None:
    from lensa_for_all.training.lora import kohya_metadata

    meta = kohya_metadata(rank=4, alpha=4.0, resolution=768, steps=10, token="zwx", subject_class="dog",
                          instance_prompt="a photo of zwx dog", base_model="stabilityai/stable-diffusion-2-1",
                          v2=True, v_prediction=True, learning_rate=1e-4)
    assert (meta["ss_base_model_version"], meta["ss_v2"], meta["ss_v_parameterization"]) == ("sd_v2_v", "True",
                                                                                             "True")
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert all(isinstance(v, str) for v in meta.values())
