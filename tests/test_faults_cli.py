"""A real Ctrl-C (SIGINT) to a real `lensa-for-all run` process during generation, then the same command again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lensa_for_all.pipeline.state import RunState
from pipeline_helpers import copy_sample_photos

FAST_TOML = """
[training]
resolution = 64
with_prior_preservation = false
train_text_encoder = false
lora_rank = 4
mixed_precision = "no"

[generation]
num_inference_steps = 2
"""
N = 12


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_generation_exits_130_and_the_rerun_finishes_the_pack_without_duplicates(
        tiny_sd: Path, tmp_path: Path) -> None:
    photos = copy_sample_photos(tmp_path / "me", n=4)
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    out = tmp_path / "avatars"
    argv = [sys.executable, "-m", "lensa_for_all", "run", str(photos), "--class", "person", "--config",
            str(tmp_path / "fast.toml"), "--base-model", str(tiny_sd), "--steps", "2", "-n", str(N), "--seed", "5",
            "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    for name in ("LENSA_CONFIG", "LENSA_OUT", "LENSA_BACKEND", "LENSA_RUN_DIR", "LENSA_NUM_IMAGES"):
        env.pop(name, None)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("*.png")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before generating: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to continue" in err and "Traceback" not in err
    kept = sorted(p.name for p in out.glob("*.png"))
    assert 1 <= len(kept) < N
    assert RunState.load(out / "run").stage("generate")["status"] == "started"
    assert (out / ".lensa.lock").read_text() == ""  # Ctrl-C released the folder's lock

    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == N and not [n for n in names if n.endswith("-2.png")]
    assert set(kept) <= set(names)  # the finished avatars were kept, not rendered again beside themselves
    state = RunState.load(out / "run")
    assert state.stage("train")["status"] == "done" and state.stage("generate")["status"] == "done"
    assert sorted(state.stage("generate")["outputs"]["files"]) == names
