"""benchmarks/gpu_acceptance.py: its CPU dry run writes the whole report, and its pieces behave (no GPU needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.py"


@pytest.fixture(scope="module")
def acceptance() -> object:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_acceptance
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return gpu_acceptance


@pytest.mark.slow
def test_dry_run_writes_every_phase(acceptance: object, tmp_path: Path) -> None:
    out, work, no_reference = tmp_path / "out", tmp_path / "work", tmp_path / "no-reference"
    no_reference.mkdir()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--work", str(work),
         "--reference-dir", str(no_reference)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_acceptance.json").read_text())
    markdown = (out / "gpu_acceptance.md").read_text()
    phases = report["phases"]
    PHASES = acceptance.PHASES  # type: ignore[attr-defined]

    assert list(phases) == list(PHASES)
    assert report["dry_run"] is True and report["settings"]["model_size"] == "tiny"
    assert phases["wheels"] == {"status": "skipped", "reason": "dry run"}
    for name in ("environment", "gpu tests", "inputs", "flops", "train LoRA", "train full", "generate 512 px"):
        assert phases[name]["status"] == "ok", (name, phases[name])
        assert phases[name]["wall_s"] > 0
    assert report["environment"]["lensa_for_all_path"] == str(ROOT / "src" / "lensa_for_all")

    tests = phases["gpu tests"]["results"]
    assert "test_gpu_training.py" in tests["files"] and "test_gpu_generation.py" in tests["files"]
    assert tests["failed"] == tests["errors"] == 0 and tests["passed"] + tests["skipped"] >= 10
    assert (out / "gpu_tests.log").is_file()

    flops = phases["flops"]["results"]
    # full fine-tuning adds the weight gradients: about 3x the forward; LoRA (frozen base) about 2x
    assert 2.5 < flops["full_flops_per_step"] / flops["forward_flops"] < 3.5
    assert 1.5 < flops["lora_flops_per_step"] / flops["forward_flops"] < 2.5

    for name in ("train LoRA", "train full"):
        sides = phases[name]["results"]["sides"]
        assert sides["reference"]["status"] == "skipped" and "reference scripts not found" in sides["reference"]["reason"]
        ours = sides["ours"]
        assert ours["status"] == "ok" and ours["s_per_step"] > 0 and len(ours["step_s"]) >= 2
        assert ours["tflops_per_s"] > 0 and ours["mfu"] is None  # no peak rate for a CPU
    generation = phases["generate 512 px"]["results"]
    assert generation["sides"]["plain"]["steps"] == 50 and generation["sides"]["avatar"]["steps"] == 25
    assert generation["speed_avatar_over_plain"] > 0
    sdxl = phases["SDXL 1024 px"]  # the tiny SDXL at 64 px stands in for SDXL 1.0's shapes at 1024 px
    assert sdxl["status"] == "ok", sdxl
    xl = sdxl["results"]
    assert (xl["model_size"], xl["resolution"]) == ("tiny", 64)
    assert {step: st["status"] for step, st in xl["steps"].items()} == {
        "inputs": "ok", "flops": "ok", "train LoRA": "ok", "generate": "ok"}
    index = json.loads((Path(xl["model"]) / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert 1.5 < xl["flops"]["lora_flops_per_step"] / xl["flops"]["forward_flops"] < 2.5
    xl_sides = xl["train LoRA"]["sides"]
    assert xl_sides["reference"]["status"] == "skipped" and "train_dreambooth_lora_sdxl.py" in xl_sides["reference"]["reason"]
    assert xl_sides["ours"]["status"] == "ok" and xl_sides["ours"]["s_per_step"] > 0
    assert xl_sides["ours"]["tflops_per_s"] > 0
    xl_gen = xl["generate"]["sides"]
    assert (xl_gen["plain"]["scheduler"], xl_gen["plain"]["steps"]) == ("EulerDiscreteScheduler", 50)
    assert xl_gen["avatar"]["steps"] == 25 and xl["generate"]["speed_avatar_over_plain"] > 0
    assert "| SDXL train LoRA | ours |" in markdown
    assert "| SDXL: AvatarModel defaults | dpmpp_2m_karras | 25 |" in markdown

    for name in PHASES:
        assert f"| {name} |" in markdown
    assert "| train LoRA | ours |" in markdown and "| AvatarModel defaults | dpmpp_2m_karras | 25 |" in markdown
    assert markdown.strip() in proc.stdout  # the table is printed too
    assert set(report["targets"]) == {
        "LoRA steps/s ours/reference >= 1.5x", "LoRA peak GPU memory ours/reference <= 1.0x",
        "bf16 MFU >= 40% (best of ours)", "generation images/s ours/plain >= 2x"}
    assert report["targets"]["LoRA steps/s ours/reference >= 1.5x"] == "not measured"


def test_peak_rates_match_the_longest_name_first(acceptance: object) -> None:
    peak = acceptance.peak_bf16_flops  # type: ignore[attr-defined]
    assert peak("NVIDIA H100 80GB HBM3") == 989e12
    assert peak("NVIDIA H100 PCIe") == 756e12
    assert peak("NVIDIA H200") == 989e12
    assert peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak("NVIDIA L40S") == 362e12 and peak("NVIDIA L4") == 121e12
    assert peak("NVIDIA A10G") == 70e12
    assert peak("cpu") is None and peak("NVIDIA GeForce GTX 1080") is None


def test_a_phase_past_the_budget_is_skipped_and_a_failing_one_recorded(acceptance: object) -> None:
    mod = acceptance
    report: dict = {"phases": {}}
    spent = mod.Budget(10.0, {"a": 5.0, "b": 5.0}, {"a": 1.0, "b": 20.0})  # type: ignore[attr-defined]
    assert mod.run_phase(report, "a", spent, lambda t: {"ok": True, "t": t})["t"] == 5.0  # type: ignore[attr-defined]
    assert mod.run_phase(report, "b", spent, lambda t: {"ok": True}) is None  # type: ignore[attr-defined]
    assert report["phases"]["b"]["status"] == "skipped" and "out of time" in report["phases"]["b"]["reason"]

    def boom(t: float) -> None:
        raise RuntimeError("no kernel image for this GPU")

    mod.run_phase(report, "c", mod.Budget(100.0, {}, {}), boom)  # type: ignore[attr-defined]
    assert report["phases"]["c"]["status"] == "failed" and "no kernel image" in report["phases"]["c"]["reason"]
    mod.run_phase(report, "d", mod.Budget(100.0, {}, {}), lambda t: {"ok": False})  # type: ignore[attr-defined]
    assert report["phases"]["d"]["status"] == "failed"


def test_targets_say_met_or_not_from_the_figures(acceptance: object) -> None:
    phases = {
        "train LoRA": {"results": {"speed_ours_over_reference": 1.62, "gpu_memory_ours_over_reference": 1.04,
                                   "sides": {"ours": {"mfu": 0.31}}}},
        "train full": {"results": {"sides": {"ours": {"mfu": 0.44}}}},
        "generate 512 px": {"results": {"speed_avatar_over_plain": 1.9}},
    }
    targets = acceptance.evaluate_targets(phases)  # type: ignore[attr-defined]
    assert targets["LoRA steps/s ours/reference >= 1.5x"] == "met (1.62, target 1.50)"
    assert targets["LoRA peak GPU memory ours/reference <= 1.0x"] == "not met (1.04)"
    assert targets["bf16 MFU >= 40% (best of ours)"] == "met (44.0%, target 40.0%)"
    assert targets["generation images/s ours/plain >= 2x"] == "not met (1.90, target 2.00)"


def test_gpu_test_files_are_those_with_gpu_marks(acceptance: object) -> None:
    names = {p.name for p in acceptance.gpu_test_files(ROOT / "tests")}  # type: ignore[attr-defined]
    assert {"test_gpu_training.py", "test_gpu_generation.py", "test_training_loop.py",
            "test_generation.py", "test_endpoint.py"} <= names
    assert "test_photos.py" not in names and "test_gpu_acceptance_dry_run.py" not in names


def test_pytest_outcomes_are_read_from_a_cut_off_verbose_log(acceptance: object) -> None:
    log = "\n".join([
        "tests/test_gpu_training.py::test_full[fp16] PASSED                  [ 10%]",
        "tests/test_gpu_training.py::test_full[bf16] FAILED                  [ 20%]",
        "tests/test_gpu_training.py::test_two_gpus SKIPPED (needs 2 GPUs; this machine has 1) [ 30%]",
        "tests/test_gpu_generation.py::test_fp16[None] ERROR                 [ 40%]",
        "tests/test_gpu_generation.py::test_fp16[euler_a] ",  # killed mid-test
    ])
    r = acceptance.parse_pytest_log(log)  # type: ignore[attr-defined]
    assert (r["passed"], r["failed"], r["errors"], r["skipped"]) == (1, 1, 1, 1)
    assert r["failures"] == ["tests/test_gpu_training.py::test_full[bf16]", "tests/test_gpu_generation.py::test_fp16[None]"]
    assert r["skip_reasons"] == ["needs 2 GPUs; this machine has 1"]
