"""``lensa-for-all run`` and ``lensa-for-all demo`` end to end, ``--json`` output, exit codes and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lensa_for_all.cli.main import EXIT_ERROR, EXIT_USAGE, main
from pipeline_helpers import copy_sample_photos

FAST_TOML = """
[training]
resolution = 64
with_prior_preservation = false
train_text_encoder = false
lora_rank = 4
mixed_precision = "no"
learning_rate = 1e-3

[generation]
num_inference_steps = 2
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LENSA_CONFIG", "LENSA_OUT", "LENSA_BACKEND", "LENSA_RUN_DIR", "LENSA_NUM_IMAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    monkeypatch.chdir(tmp_path)


def _json(out: str) -> dict:  # type: ignore[type-arg]
    return json.loads(out)


def demo_notice_lines() -> list[str]:
    from lensa_for_all import demo

    return [demo.RANDOM_WEIGHTS_NOTICE, "", "With your own photos and a GPU (or --backend sagemaker), run:",
            f"  {demo.NEXT_COMMAND}"]


@pytest.mark.slow
def test_run_json_then_rerun_and_resume_reuse_every_stage(tiny_sd: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    photos = copy_sample_photos(tmp_path / "me", n=4)
    (tmp_path / "fast.toml").write_text(FAST_TOML)
    argv = ["run", str(photos), "--class", "person", "--config", "fast.toml", "--base-model", str(tiny_sd),
            "--steps", "2", "-n", "2", "--styles", "corporate_headshot", "--seed", "5", "--json"]
    assert main([*argv, "--out", "avatars"]) == 0
    result = _json(capsys.readouterr().out)
    assert len(result["avatars"]) == 2 and result["reused"] == [] and result["backend"] == "local"
    assert Path(result["out_dir"]).resolve() == (tmp_path / "avatars").resolve()
    for path in result["avatars"]:
        with Image.open(path) as im:
            assert im.size == (64, 64)
    assert Path(result["contact_sheet"]).is_file() and Path(result["model"], "pytorch_lora_weights.safetensors").is_file()
    assert set(result["durations"]) == {"photos", "train", "generate"}

    # the same command again, the output folder now from the environment: nothing is redone
    monkeypatch.setenv("LENSA_OUT", "avatars")
    assert main(argv) == 0
    again = _json(capsys.readouterr().out)
    assert again["reused"] == ["photos", "train", "generate"] and again["avatars"] == result["avatars"]
    assert main(["run", "--resume", "avatars/run", "--json"]) == 0
    assert _json(capsys.readouterr().out)["reused"] == ["photos", "train", "generate"]
    # a flag beats the environment: another output folder renders the avatars again, without retraining
    assert main([*argv, "--out", "other", "--run-dir", "avatars/run"]) == 0
    other = _json(capsys.readouterr().out)
    assert other["reused"] == ["photos", "train"] and Path(other["out_dir"]).name == "other"


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "me", "--out", "x", "--config", "missing.toml"], "missing.toml does not exist"),
    (["run", "--resume", "nowhere"], "not a lensa-for-all run folder"),
    (["run", "me", "--out", "x", "--base-model", "/no/such/model"], "Photo folder me does not exist"),
])
def test_errors_are_one_paragraph_with_exit_code_1(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "me"], "Say where the avatars go: --out DIR"),
    (["run", "--out", "x"], "Name the photo folder"),
    (["run", "me", "--resume", "x"], "either PHOTOS or --resume"),
    (["run", "me", "--out", "x", "--class", ""], "The subject class (--class, LENSA_CLASS or class in the config file) must not be empty"),
    (["run", "me", "--out", "x", "--backend", "gpu"], "invalid choice: 'gpu'"),
])
def test_usage_errors_exit_with_code_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_config_file_is_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "lensa.toml").write_text("[sagemaker]\ninstance = 'ml.g5.xlarge'\n")  # found in the cwd
    assert main(["run", "me", "--out", "x"]) == EXIT_ERROR
    assert "unknown key(s) ['instance'] in [sagemaker]" in capsys.readouterr().err


# Ctrl-C: a real SIGINT to a real `lensa-for-all run` process is in test_faults_cli.py.


@pytest.mark.slow
def test_demo_runs_every_stage_offline_and_says_what_it_is(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    assert main(["demo", "--out", "demo", "--size", "tiny", "--steps", "3", "-n", "2"]) == 0
    captured = capfd.readouterr()  # file-descriptor level: a library writing to the real stderr is caught too
    assert "RANDOM weights" in captured.out and "lensa-for-all run photos/me --class person --out avatars/" in captured.out
    assert "Avatars: 2 in" in captured.err  # the summary, under the progress
    ours = re.compile(r"^(|✓ (prepare photos|train|generate avatars): .*|(Avatars|Model|Photos|Time): .*)$")
    assert [line for line in captured.err.splitlines() if not ours.match(line)] == []  # nothing but our lines
    assert captured.out.splitlines() == ["", *demo_notice_lines()]
    log = (tmp_path / "demo" / "run" / "lensa.log").read_text()
    assert "diffusers" in log  # the libraries' own messages went to the run's log file instead
    demo = tmp_path / "demo"
    sheet = demo / "avatars" / "contact_sheet.jpg"
    with Image.open(sheet) as im:
        assert im.width > 64
    assert len(list((demo / "avatars").glob("*.png"))) == 2
    manifest = json.loads((demo / "run" / "photos" / "manifest.json").read_text())
    assert len(manifest["photos"]) == 5  # the shipped sample photos, checked and cropped
    trained = json.loads((demo / "run" / "model" / "lensa_manifest.json").read_text())
    assert trained["metrics"]["steps"] == 3 and trained["metrics"]["num_class_images"] == 2  # prior preservation ran

    # again, as a script would: JSON only on stdout, every stage reused
    assert main(["demo", "--out", "demo", "--size", "tiny", "--steps", "3", "-n", "2", "--json"]) == 0
    result = _json(capfd.readouterr().out)
    assert result["random_weights"] is True and result["reused"] == ["photos", "train", "generate"]
