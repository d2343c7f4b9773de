"""``lensa-for-all export``: the right files per tool, clear errors, nothing overwritten without --force."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export_helpers import make_lora_export
from lensa_for_all.cli.main import main


@pytest.fixture(scope="module")
def lora_export(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_export(tiny_sd, tmp_path_factory.mktemp("lora") / "zwx-dog")


@pytest.fixture(scope="module")
def full_export(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffusers import UNet2DConditionModel

    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.artifacts import write_artifacts

    config = TrainingConfig.for_subject("person", "full", base_model=str(tiny_sd), resolution=64, token="qwv",
                                        with_prior_preservation=False, train_text_encoder=False)
    out = tmp_path_factory.mktemp("full") / "qwv-person"
    write_artifacts(out, config, UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet"), None,
                    metrics={"steps": 3}, losses=[0.3], prediction_type="epsilon")
    return out


def test_a1111_and_comfyui_get_the_kohya_lora(lora_export: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for tool, place in (("a1111", "stable-diffusion-webui/models/Lora/"), ("comfyui", "ComfyUI/models/loras/")):
        dest = tmp_path / tool
        assert main(["export", str(lora_export), "--format", tool, str(dest)]) == 0
        assert sorted(p.name for p in dest.iterdir()) == ["INSTALL.txt", "zwx_lora_kohya.safetensors"]
        assert (dest / "zwx_lora_kohya.safetensors").read_bytes() == (
            lora_export / "zwx_lora_kohya.safetensors").read_bytes()
        printed = capsys.readouterr().out
        assert place in printed and place in (dest / "INSTALL.txt").read_text()
    assert "<lora:zwx_lora_kohya:1>" in printed


def test_diffusers_and_hub_exports_load_back(lora_export: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from lensa_for_all.generation import AvatarModel

    assert main(["export", str(lora_export), "--format", "diffusers", str(tmp_path / "d")]) == 0
    model = AvatarModel.load(tmp_path / "d")
    assert model.is_lora and model.token == "zwx"
    assert main(["export", str(lora_export), "--format", "hub", str(tmp_path / "h")]) == 0
    names = {p.name for p in (tmp_path / "h").iterdir()}
    assert {"pytorch_lora_weights.safetensors", "zwx_lora_kohya.safetensors", "README.md",
            "lensa_manifest.json"} <= names
    assert "INSTALL.txt" not in names  # it would be uploaded with the model
    assert ModelCard.load(tmp_path / "h" / "README.md").data.instance_prompt == "a photo of zwx dog"


def test_a_full_fine_tune_exports_its_checkpoint_and_pipeline(full_export: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    from lensa_for_all.generation import AvatarModel

    assert main(["export", str(full_export), "--format", "comfyui", str(tmp_path / "c")]) == 0
    ckpt = tmp_path / "c" / "qwv_checkpoint.safetensors"
    assert ckpt.read_bytes() == (full_export / "qwv_checkpoint.safetensors").read_bytes()
    assert "ComfyUI/models/checkpoints/" in (tmp_path / "c" / "INSTALL.txt").read_text()
    assert main(["export", str(full_export), "--format", "a1111", "--fp32", str(tmp_path / "a")]) == 0
    with safe_open(str(tmp_path / "a" / "qwv_checkpoint.safetensors"), "pt") as f:
        names = list(f.keys())
        assert {str(f.get_tensor(k).dtype) for k in names} == {"torch.float32"}
    assert main(["export", str(full_export), "--format", "diffusers", str(tmp_path / "d")]) == 0
    assert not AvatarModel.load(tmp_path / "d").is_lora


def test_no_file_is_replaced_without_force(lora_export: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "zwx_lora_kohya.safetensors").write_bytes(b"mine")
    assert main(["export", str(lora_export), "--format", "a1111", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "already holds zwx_lora_kohya.safetensors" in err and "--force" in err
    assert (dest / "zwx_lora_kohya.safetensors").read_bytes() == b"mine"
    assert sorted(p.name for p in dest.iterdir()) == ["zwx_lora_kohya.safetensors"]  # nothing else written
    assert main(["export", str(lora_export), "--format", "a1111", str(dest), "--force"]) == 0
    assert (dest / "zwx_lora_kohya.safetensors").read_bytes() != b"mine"


def test_a_folder_that_is_not_ours_is_refused(tiny_sd: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hello")
    assert main(["export", str(tmp_path / "random"), "--format", "a1111", str(tmp_path / "x")]) == 1
    assert "not a lensa-for-all model folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "lensa_manifest.json").write_text(json.dumps({"hello": 1}))
    assert main(["export", str(tmp_path / "bad"), "--format", "hub", str(tmp_path / "x")]) == 1
    assert "not written by lensa-for-all" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_half_written_folder_is_refused(lora_export: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    no_manifest = tmp_path / "no-manifest"
    shutil.copytree(lora_export, no_manifest)
    (no_manifest / "lensa_manifest.json").unlink()
    assert main(["export", str(no_manifest), "--format", "a1111", str(tmp_path / "x")]) == 1
    assert "half-written" in capsys.readouterr().err
    missing = tmp_path / "missing"
    shutil.copytree(lora_export, missing)
    (missing / "zwx_lora_kohya.safetensors").unlink()
    assert main(["export", str(missing), "--format", "diffusers", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "incomplete" in err and "zwx_lora_kohya.safetensors" in err
    assert not (tmp_path / "x").exists()
