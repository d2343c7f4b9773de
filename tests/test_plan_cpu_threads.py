"""The CPU thread count follows the model size, and is used only on CPU and only when the user set none."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lensa_for_all import cpu_threads
from lensa_for_all.cpu_threads import cpu_threads_for, model_size, recommended_threads


def _model(folder: Path, widths: list[int]) -> Path:
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps({"block_out_channels": widths}))
    return folder


def test_model_size_from_the_unet(tiny_sd: Path, tmp_path: Path) -> None:
    assert model_size(tiny_sd) == "tiny"
    assert model_size(_model(tmp_path / "small", [32, 64, 128])) == "small"
    assert model_size(_model(tmp_path / "sd15", [320, 640, 1280, 1280])) == "sd15"
    assert model_size("stable-diffusion-v1-5/stable-diffusion-v1-5") == "sd15"  # a Hub id: full size
    assert recommended_threads(tiny_sd, cores=2) == 1
    assert recommended_threads(tmp_path / "sd15", cores=16) == 16


def test_threads_are_set_on_cpu_and_restored(tiny_sd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "_has_accelerator", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_threads_for(tiny_sd) as threads:
            assert threads == 1 and torch.get_num_threads() == 1
            assert os.environ["OMP_NUM_THREADS"] == "1"  # the training subprocess inherits it
        assert torch.get_num_threads() == 2 and "OMP_NUM_THREADS" not in os.environ
        # the user's own setting wins; so does a GPU
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        with cpu_threads_for(tiny_sd) as threads:
            assert threads is None and torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(cpu_threads, "_has_accelerator", lambda: True)
        with cpu_threads_for(tiny_sd) as threads:
            assert threads is None and "OMP_NUM_THREADS" not in os.environ
    finally:
        torch.set_num_threads(before)
