#!/usr/bin/env python
"""GPU acceptance in one call: the CUDA tests, the 512 px training and generation benchmarks, one report.

On a CUDA machine with no internet (the device machine, or any other), after ``scripts/gpu_wheels.sh``
has filled ``.gpu-wheels/``:

1. installs the carried wheels with pip (``--no-index --no-deps``, into the running environment, or
   ``--site DIR`` put on ``PYTHONPATH``; the checkout's ``src/`` goes first on the path, so the code
   measured is this tree's even where an older wheel is installed), then within a wall-time
   budget (8 minutes by default, each phase with its own share; a phase that would not fit is recorded
   as skipped, with the reason):
2. ``pytest -m gpu`` over the test files that hold gpu-marked tests;
3. counts the UNet's FLOPs per training step (``torch.utils.flop_counter.FlopCounterMode`` on one
   forward + backward at the benchmark's shapes);
4. trains the SD-1.5-shaped random-weight model (``make_tiny_sd(..., "sd15")``) at 512 px, LoRA and full
   fine-tuning, in bf16 with gradient checkpointing and 8-bit Adam, ours and diffusers' reference scripts
   side by side (``benchmarks/train_throughput.py`` runs each side in its own process): s/step, peak GPU
   memory, model FLOP utilisation (UNet FLOPs per step / s per step / the GPU's peak dense bf16 rate);
5. generates at 512 px, ``AvatarModel`` defaults against a plain ``StableDiffusionPipeline`` with its
   defaults (``benchmarks/generate_throughput.py``): images/s and peak GPU memory;
6. the same for SDXL 1.0 base's shapes at 1024 px (``make_tiny_sd(..., "full", family="sdxl")``, built on
   the GPU and saved in fp16): LoRA training ours against diffusers' ``train_dreambooth_lora_sdxl.py`` (bf16,
   gradient checkpointing, 8-bit Adam; s/step, peak GPU memory, MFU from the SDXL UNet's FLOPs at 1024 px),
   then ``AvatarModel`` against ``StableDiffusionXLPipeline`` defaults (images/s, peak GPU memory);
7. writes ``gpu_acceptance.json`` and ``gpu_acceptance.md`` under ``$OUT`` (or ``--out``; default a
   temporary folder) and prints the markdown.

``--dry-run`` runs every phase's code on the CPU with the tiny model and a few steps, without the
wheel step, so CI keeps this script working (``tests/test_gpu_acceptance_dry_run.py``).

    bash scripts/gpu_wheels.sh                        # here, with internet (DIFFUSERS_CHECKOUT=... for the reference)
    python3 benchmarks/gpu_acceptance.py              # there, on the CUDA machine
    python benchmarks/gpu_acceptance.py --dry-run     # anywhere, CPU only
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import generate_throughput  # noqa: E402
import train_throughput  # noqa: E402

# Peak dense bf16 tensor-core rate by device name (first match wins, so longer names come first).
# NVIDIA's datasheets quote the H100/H200/L4 figures "with sparsity"; dense is half of that:
# H100 SXM and H200 1979 -> 989 TFLOP/s, H100 PCIe 1513 -> 756, L40S 733 -> 362, L4 242 -> 121;
# A100 312 dense (datasheet); A10G 70 (AWS's G5 instance documentation, the A10G being a
# lower-clocked A10). On the device machine a plain 8192^3 bf16 matmul reached about 790 TFLOP/s
# (.library/device/KINDS.md), so 80% MFU is about the practical ceiling there.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
    ("L4", 121.0), ("A10G", 70.0),
)

PHASES = ("wheels", "environment", "gpu tests", "inputs", "flops", "train LoRA", "train full", "generate 512 px",
          "SDXL 1024 px")
# Wall-time shares (seconds) on an H100/H200; they add up to the default 480 s budget. The wheel step
# comes before the budget starts. SDXL at 1024 px takes a third (building a 3.5-billion-parameter model,
# two training runs, two generation runs); the SD 1.5 phases were shrunk for it (from 20/110/40/30/110/
# 120/50 s): at 512 px a side loads in seconds and 25 steps take a few seconds more on an H100.
PHASE_BUDGET_S = {"environment": 10, "gpu tests": 80, "inputs": 30, "flops": 20, "train LoRA": 65,
                  "train full": 75, "generate 512 px": 40, "SDXL 1024 px": 160}
# How the SDXL phase splits its share (fractions of what it is allowed).
SDXL_SPLIT = {"inputs": 0.30, "flops": 0.08, "train LoRA": 0.40, "generate": 0.22}
GPU_BUDGET_S, DRY_RUN_BUDGET_S = 480.0, 1800.0
# A phase is skipped when less than this is left of the whole budget.
PHASE_MIN_S = {"environment": 5, "gpu tests": 30, "inputs": 10, "flops": 10, "train LoRA": 40, "train full": 40,
               "generate 512 px": 20, "SDXL 1024 px": 60}

TARGETS = {"train_speed": 1.5, "mfu": 0.40, "generate_speed": 2.0}
REPORT_JSON, REPORT_MD, TESTS_LOG = "gpu_acceptance.json", "gpu_acceptance.md", "gpu_tests.log"
GPU_TEST_MARKER = "mark.gpu"


def peak_bf16_flops(device_name: str) -> float | None:
    """The GPU's peak dense bf16 rate in FLOP/s from :data:`PEAK_BF16_TFLOPS`, or ``None`` if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


class Budget:
    """The wall-time budget: each phase gets its share, never more than what is left of the whole."""

    def __init__(self, total_s: float, shares: dict[str, float], minimums: dict[str, float]) -> None:
        self.total_s = total_s
        self.start = time.monotonic()
        self.shares = shares
        self.minimums = minimums

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.start)

    def allow(self, phase: str) -> float | None:
        """Seconds this phase may take, or ``None`` when too little is left to start it."""
        left = self.left()
        if left < self.minimums.get(phase, 0):
            return None
        return max(0.0, min(self.shares.get(phase, left), left))


# ---------------------------------------------------------------------------------------------------
# Workers: each runs in its own process, so its GPU memory and peak are its own
# ---------------------------------------------------------------------------------------------------

def environment_worker() -> dict[str, Any]:
    """Device, library versions and what the CUDA paths need."""
    import importlib.metadata as md

    import torch

    versions = {}
    for name in ("torch", "diffusers", "transformers", "accelerate", "peft", "huggingface-hub", "bitsandbytes",
                 "torchvision", "lensa-for-all"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    import lensa_for_all

    import_errors = {}
    for module in ("diffusers", "transformers", "accelerate", "peft", "bitsandbytes", "torchvision"):
        try:
            importlib.import_module(module)
        except Exception as exc:  # a missing or broken package: the phases that need it will say so too
            import_errors[module] = f"{type(exc).__name__}: {exc}"[:500]
    return {
        "import_errors": import_errors,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cuda": torch.version.cuda,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "python": sys.version.split()[0],
        "versions": versions,
        "lensa_for_all_path": str(Path(lensa_for_all.__file__).parent),
    }


def flops_worker(model: str, resolution: int, batch: int) -> dict[str, Any]:
    """UNet FLOPs of one training step (forward + backward) for full fine-tuning and for LoRA.

    Full: every UNet weight takes a gradient. LoRA: the base weights are frozen, so backward computes
    only the activation gradients (the adapters' own FLOPs are under 1% and left out). Gradient
    checkpointing's recomputed forward is not counted: this is *model* FLOPs, as MFU defines them.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").to(device, dtype=dtype)
    size = resolution // 8
    gen = torch.Generator(device).manual_seed(0)
    sample = torch.randn(batch, unet.config.in_channels, size, size, generator=gen, device=device, dtype=dtype)
    hidden = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=gen, device=device, dtype=dtype)
    t = torch.randint(0, 1000, (batch,), generator=gen, device=device)
    extra: dict[str, Any] = {}
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embedding + six size/crop numbers
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled, generator=gen, device=device, dtype=dtype),
            "time_ids": torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * batch,
                                     device=device, dtype=dtype)}
    out: dict[str, Any] = {"batch": batch, "latent_size": size}
    # FlopCounterMode has formulas for the CUDA attention kernels but not for the CPU flash kernel:
    # on a CPU, count through the math backend (plain matmuls) so attention is not left out.
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with contextlib.nullcontext() if cuda else sdpa_kernel(SDPBackend.MATH):
        for method in ("full", "lora"):
            unet.requires_grad_(method == "full")
            x = sample.clone().requires_grad_(method == "lora")
            counter = FlopCounterMode(display=False)
            with counter:
                unet(x, t, hidden, return_dict=False, **extra)[0].float().square().mean().backward()
            out[f"{method}_flops_per_step"] = int(counter.get_total_flops())
            unet.zero_grad(set_to_none=True)
        with torch.no_grad(), FlopCounterMode(display=False) as fwd:
            unet(sample, t, hidden, return_dict=False, **extra)
        out["forward_flops"] = int(fwd.get_total_flops())
    return out


def _worker_main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "environment":
        result = environment_worker()
    elif kind == "flops":
        result = flops_worker(argv[1], int(argv[2]), int(argv[3]))
    elif kind == "inputs":  # the model is built in its own process: its GPU memory is freed with it
        work, family, size, resolution, photos, classes = argv[1:7]
        built = train_throughput.prepare_inputs(Path(work), model_size=size, resolution=int(resolution),
                                                num_photos=int(photos), num_class_images=int(classes), family=family)
        result = {k: str(v) for k, v in built.items()}
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    print("RESULT " + json.dumps(result))
    return 0


def _run_worker(args: list[str], timeout: float, threads: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "_worker", *args], capture_output=True, text=True,
                          timeout=timeout, env=train_throughput.child_env(threads), check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {args[0]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len("RESULT "):]))


# ---------------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------------

def install_wheels(wheels: Path, site: Path | None) -> dict[str, Any]:
    """pip-install every carried wheel (no index, no dependency resolution).

    Into the running Python's environment by default: subprocesses that reset ``PYTHONPATH`` (LocalBackend's
    entry point does) still see the libraries. With ``site``, into that folder instead (put on ``PYTHONPATH``).
    """
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if not files:
        raise RuntimeError(f"no wheels in {wheels}: run scripts/gpu_wheels.sh first (or pass --no-wheels)")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels), "--no-deps",
           "--no-compile", "--no-cache-dir", "--upgrade", *(["--target", str(site)] if site else []), *files]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = {"installed": [Path(f).name for f in files], "site": str(site) if site else sys.prefix}
    if site is None:  # what the carried packages need and this environment lacks (a hint when an import fails)
        names = {Path(f).name.split("-")[0].lower().replace("_", "-") for f in files}
        check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
        result["requirement_problems"] = [line for line in check.stdout.splitlines()
                                          if line.split(" ")[0].lower().replace("_", "-") in names]
    return result


def gpu_test_files(tests: Path) -> list[Path]:
    """The test files that hold gpu-marked tests (collecting only these keeps AWS/web test deps out)."""
    return sorted(p for p in tests.glob("test_*.py") if GPU_TEST_MARKER in p.read_text(encoding="utf-8"))


_TEST_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)(?: \((.*)\))?")


def parse_pytest_log(text: str) -> dict[str, Any]:
    """Per-test outcomes from ``pytest -v`` output (also from a run cut short by the time limit)."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures: list[str] = []
    skip_reasons: set[str] = set()
    for line in text.splitlines():
        m = _TEST_LINE.match(line.strip())
        if not m:
            continue
        name, outcome, reason = m.groups()
        if outcome in ("PASSED", "XFAIL", "XPASS"):
            counts["passed"] += 1
        elif outcome == "SKIPPED":
            counts["skipped"] += 1
            skip_reasons.add(reason or "")
        else:
            counts["failed" if outcome == "FAILED" else "errors"] += 1
            failures.append(name)
    return {**counts, "failures": failures, "skip_reasons": sorted(skip_reasons)}


def run_gpu_tests(out: Path, timeout: float) -> dict[str, Any]:
    """``pytest -m gpu -v`` over the files with gpu tests; killed at ``timeout`` with what finished kept."""
    files = gpu_test_files(ROOT / "tests")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rfEs", "--durations=15", "-p", "no:cacheprovider",
           *map(str, files)]
    log = out / TESTS_LOG
    timed_out = False
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            timed_out = True
    results = parse_pytest_log(log.read_text(errors="replace"))
    return {"exit_code": code, "timed_out": timed_out, "files": [f.name for f in files], **results,
            "log": TESTS_LOG, "ok": not timed_out and code in (0, 5) and not results["failures"]}


def reference_scripts(folder: Path, family: str = "sd1") -> tuple[dict[str, Path] | None, str | None]:
    """The reference scripts for the model family, or why the reference side cannot run here."""
    scripts = ({"full": folder / "train_dreambooth.py", "lora": folder / "train_dreambooth_lora.py"}
               if family == "sd1" else {"lora": folder / "train_dreambooth_lora_sdxl.py"})
    missing = [p.name for p in scripts.values() if not p.is_file()]
    if missing:
        return None, (f"reference scripts not found in {folder} ({', '.join(missing)}): run scripts/gpu_wheels.sh "
                      "with DIFFUSERS_CHECKOUT set")
    for module in ("torchvision",):
        if importlib.util.find_spec(module) is None:
            return None, f"the reference scripts import {module}, which is not installed here"
    return scripts, None


def train_case(method: str, settings: dict[str, Any], inputs: dict[str, Path], work: Path,
               references: dict[str, Path] | None, reference_skip: str | None, flops: dict[str, Any] | None,
               peak_flops: float | None, timeout: float, family: str = "sd1") -> dict[str, Any]:
    """One method, ours and the reference side by side (reference first: it never sees our warm cache)."""
    eight_bit = settings["use_8bit_adam"]
    ours_overrides = {"mixed_precision": settings["mixed_precision"], "gradient_checkpointing": True,
                      "use_8bit_adam": eight_bit}
    ref_extra = ["--mixed_precision", settings["mixed_precision"], "--gradient_checkpointing"]
    if eight_bit:
        ref_extra.append("--use_8bit_adam")
    xl = family == "sdxl"
    spec: dict[str, Any] = {
        "family": family,
        "model": str(inputs["model"]), "photos": str(inputs["photos"]), "classes": str(inputs["classes"]),
        "num_class_images": settings["class_images"],
        "resolution": settings["sdxl_resolution" if xl else "resolution"],
        "steps": settings["sdxl_steps" if xl else "steps"], "warmup": settings["sdxl_warmup" if xl else "warmup"],
        "method": method, "train_text_encoder": False,
        "reference": str(references["full"]) if references and "full" in references else None,
        "reference_lora": str(references["lora"]) if references else None,
        "ours_overrides": ours_overrides, "reference_extra_args": ref_extra,
    }
    sides = ["reference", "ours"] if references else ["ours"]
    deadline = time.monotonic() + timeout
    result: dict[str, Any] = {"sides": {}}
    if reference_skip:
        result["sides"]["reference"] = {"status": "skipped", "reason": reference_skip}
    for i, side in enumerate(sides):
        left = deadline - time.monotonic()
        share = left / (len(sides) - i)  # what is left, split between the sides still to run
        try:
            run = train_throughput.run_one({**spec, "side": side}, work / "runs" / f"{family}-{side}-{method}",
                                           settings["threads"], timeout_s=share)
        except TimeoutError as exc:
            result["sides"][side] = {"status": "timeout", "reason": str(exc)}
            continue
        except RuntimeError as exc:
            result["sides"][side] = {"status": "failed", "reason": str(exc)[-2000:]}
            continue
        s = run["median_s_per_step"]
        model_flops = (flops or {}).get(f"{method}_flops_per_step")
        result["sides"][side] = {
            "status": "ok", "s_per_step": s, "steps_per_s": 1 / s, "gpu_peak_mb": run["gpu_peak_mb"],
            "peak_rss_mb": run["peak_rss_mb"], "wall_s": run["wall_s"], "step_s": run["step_s"],
            "tflops_per_s": model_flops / s / 1e12 if model_flops else None,
            "mfu": model_flops / s / peak_flops if model_flops and peak_flops else None,
        }
    ours, ref = result["sides"].get("ours", {}), result["sides"].get("reference", {})
    if ours.get("status") == "ok" and ref.get("status") == "ok":
        result["speed_ours_over_reference"] = ref["s_per_step"] / ours["s_per_step"]
        if ours["gpu_peak_mb"] and ref["gpu_peak_mb"]:
            result["gpu_memory_ours_over_reference"] = ours["gpu_peak_mb"] / ref["gpu_peak_mb"]
    result["ok"] = ours.get("status") == "ok"
    return result


def generate_case(model: Path, settings: dict[str, Any], timeout: float, num_images: int | None = None
                  ) -> dict[str, Any]:
    """The family's plain pipeline (StableDiffusion(XL)Pipeline) with its defaults, then AvatarModel defaults,
    each in its own process."""
    deadline = time.monotonic() + timeout
    result: dict[str, Any] = {"sides": {}}
    for i, side in enumerate(("plain", "avatar")):
        left = deadline - time.monotonic()
        args = argparse.Namespace(num_images=num_images or settings["num_images"], device=settings["device"],
                                  dtype=settings["dtype"], avatar_batch_size=None, threads=settings["threads"],
                                  timeout=max(1.0, left / (2 - i)))
        try:
            run = generate_throughput.run_side(side, model, args)
        except subprocess.TimeoutExpired:
            result["sides"][side] = {"status": "timeout", "reason": f"killed after {args.timeout:.0f} s"}
            continue
        except SystemExit as exc:  # run_side's way of saying the worker failed
            result["sides"][side] = {"status": "failed", "reason": str(exc)[-2000:]}
            continue
        result["sides"][side] = {"status": "ok", **run}
    plain, avatar = result["sides"].get("plain", {}), result["sides"].get("avatar", {})
    if plain.get("status") == "ok" and avatar.get("status") == "ok":
        result["speed_avatar_over_plain"] = avatar["images_per_s"] / plain["images_per_s"]
    result["ok"] = "speed_avatar_over_plain" in result
    return result


def sdxl_case(settings: dict[str, Any], work: Path, reference_dir: Path, peak_flops: float | None,
              timeout: float) -> dict[str, Any]:
    """SDXL at its own size: build the model (SDXL 1.0 base's shapes on a GPU, the tiny SDXL in the dry run),
    count its UNet's FLOPs, train LoRA ours against ``train_dreambooth_lora_sdxl.py``, then generate ours
    against ``StableDiffusionXLPipeline``. Each step gets its :data:`SDXL_SPLIT` share of ``timeout`` plus what
    the steps before it left over; a step that fails is recorded and the next ones still run."""
    deadline = time.monotonic() + timeout
    result: dict[str, Any] = {"model_size": settings["sdxl_model_size"], "resolution": settings["sdxl_resolution"],
                              "steps": {}}
    order = list(SDXL_SPLIT)

    def share(step: str) -> float:
        left = deadline - time.monotonic()
        rest = sum(SDXL_SPLIT[s] for s in order[order.index(step):])
        return max(1.0, left * SDXL_SPLIT[step] / rest)

    def attempt(step: str, fn: Any) -> Any:
        t0 = time.monotonic()
        try:
            value = fn(share(step))
            result["steps"][step] = {"status": "ok", "wall_s": time.monotonic() - t0}
            return value
        except (subprocess.TimeoutExpired, TimeoutError) as exc:
            result["steps"][step] = {"status": "timeout", "reason": str(exc)[-500:], "wall_s": time.monotonic() - t0}
        except Exception as exc:  # recorded; the other steps still run where they can
            result["steps"][step] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[-3000:],
                                     "wall_s": time.monotonic() - t0}
        return None

    built = attempt("inputs", lambda t: _run_worker(
        ["inputs", str(work), "sdxl", settings["sdxl_model_size"], str(settings["sdxl_resolution"]),
         str(settings["photos"]), str(settings["class_images"])], t, settings["threads"]))
    inputs = {k: Path(v) for k, v in built.items()} if built else None
    if inputs is None:
        result["ok"] = False
        return result
    result["model"] = str(inputs["model"])
    if settings["device"] == "cpu":  # the dry run: in this process, saving a start-up (the SD 1 phase runs the worker)
        result["flops"] = attempt("flops", lambda t: flops_worker(str(inputs["model"]), settings["sdxl_resolution"], 2))
    else:
        result["flops"] = attempt("flops", lambda t: _run_worker(
            ["flops", str(inputs["model"]), str(settings["sdxl_resolution"]), "2"], t, settings["threads"]))
    refs, ref_skip = reference_scripts(reference_dir, family="sdxl")
    result["train LoRA"] = attempt("train LoRA", lambda t: train_case(
        "lora", settings, inputs, work, refs, ref_skip, result["flops"], peak_flops, t, family="sdxl"))
    result["generate"] = attempt("generate", lambda t: generate_case(
        inputs["model"], settings, t, num_images=settings["sdxl_num_images"]))
    result["ok"] = all(s["status"] == "ok" for s in result["steps"].values()) and all(
        (result.get(k) or {}).get("ok", False) for k in ("train LoRA", "generate"))
    return result


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------

def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else format(x, spec) + suffix


def render_markdown(report: dict[str, Any]) -> str:
    env = report.get("environment") or {}
    phases = report["phases"]
    lines = [f"# GPU acceptance ({'dry run, CPU' if report['dry_run'] else 'CUDA'})", "",
             f"{report['started_utc']}, commit {report['code']['commit'] or '?'}"
             + (" (uncommitted library changes)" if report["code"]["dirty_library_files"] else "")
             + f", device {env.get('device', '?')}, torch {env.get('versions', {}).get('torch', '?')}, "
             f"diffusers {env.get('versions', {}).get('diffusers', '?')}, "
             f"bitsandbytes {env.get('versions', {}).get('bitsandbytes') or 'not installed'}; "
             f"budget {report['budget_s']:.0f} s, used {report['elapsed_s']:.0f} s.", "",
             "| phase | status | wall s | note |", "| --- | --- | ---: | --- |"]
    for name in PHASES:
        ph = phases.get(name, {"status": "missing"})
        note = ph.get("reason", "")
        if name == "environment" and ph.get("status") == "ok":
            broken = ph["results"].get("import_errors") or {}
            note = f"{ph['results']['device']}" + (f"; cannot import {', '.join(broken)}" if broken else "")
        if name == "wheels" and ph.get("status") == "ok" and ph["results"].get("requirement_problems"):
            note = "pip check: " + "; ".join(ph["results"]["requirement_problems"])
        if name == "gpu tests" and ph.get("status") in ("ok", "failed"):
            r = ph["results"]
            note = (("cut off by its time limit; " if r.get("timed_out") else "")
                    + f"{r['passed']} passed, {r['failed']} failed, {r['errors']} errors, {r['skipped']} skipped"
                    + (f"; failing: {', '.join(r['failures'])}" if r["failures"] else ""))
        if name == "SDXL 1024 px" and ph.get("status") in ("ok", "failed") and ph.get("results"):
            note = "; ".join(f"{step} {st['status']} ({st['wall_s']:.0f} s)"
                             for step, st in ph["results"]["steps"].items())
        lines.append(f"| {name} | {ph['status']} | {_fmt(ph.get('wall_s'), '.1f')} | {note.splitlines()[0] if note else ''} |")
    settings = report["settings"]
    lines += ["", f"Training: {settings['model_size']} model, {settings['resolution']} px, batch 1 + prior "
              f"preservation, text encoder frozen, {settings['mixed_precision']}, gradient checkpointing, "
              f"{'8-bit Adam' if settings['use_8bit_adam'] else 'AdamW (8-bit Adam unavailable)'}, "
              f"{settings['steps']} steps ({settings['warmup']} warm-up); MFU = UNet model FLOPs per step / "
              "s per step / peak dense bf16 "
              f"({_fmt(report.get('peak_bf16_tflops'), '.0f', ' TFLOP/s') if report.get('peak_bf16_tflops') else 'unknown for this device'}).",
              "", "| case | side | s/step | speed (ours/ref) | peak GPU memory | memory (ours/ref) | TFLOP/s | MFU |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    sdxl_phase = phases.get("SDXL 1024 px", {})
    sdxl = sdxl_phase.get("results") or {}
    sdxl_steps = sdxl.get("steps", {})

    def missing(step: str) -> str:
        if step in sdxl_steps:
            return sdxl_steps[step]["status"]
        return sdxl_phase.get("status", "missing") if not sdxl_steps else "not reached"

    train_rows = [(name, phases.get(name, {}).get("results"), phases.get(name, {}).get("status", "missing"))
                  for name in ("train LoRA", "train full")]
    train_rows.append(("SDXL train LoRA", sdxl.get("train LoRA"), missing("train LoRA")))
    for name, res, status in train_rows:
        if not res:
            lines.append(f"| {name} | - | {status} | | | | | |")
            continue
        for side in ("reference", "ours"):
            s = res["sides"].get(side)
            if s is None:
                continue
            if s["status"] != "ok":
                reason = [line for line in s["reason"].splitlines() if line.strip()] or [""]
                lines.append(f"| {name} | {side} | {s['status']}: {reason[-1][:100]} | | | | | |")
                continue
            ours = side == "ours"
            lines.append(
                f"| {name} | {side} | {s['s_per_step']:.3f} | "
                f"{_fmt(res.get('speed_ours_over_reference') if ours else None, '.2f', 'x')} | "
                f"{_fmt(s['gpu_peak_mb'], '.0f', ' MB')} | "
                f"{_fmt(res.get('gpu_memory_ours_over_reference') if ours else None, '.2f', 'x')} | "
                f"{_fmt(s['tflops_per_s'], '.1f')} | {_fmt(s['mfu'] * 100 if s['mfu'] is not None else None, '.1f', '%')} |")
    lines += ["", f"SDXL train LoRA: {settings['sdxl_model_size']} SDXL ({'SDXL 1.0 base shapes' if settings['sdxl_model_size'] == 'full' else 'diffusers test dummy'}) "
              f"at {settings['sdxl_resolution']} px, {settings['sdxl_steps']} steps ({settings['sdxl_warmup']} warm-up), "
              "otherwise as above; reference: train_dreambooth_lora_sdxl.py."]
    lines += ["", f"Generation: {settings['num_images']} images (SDXL: {settings['sdxl_num_images']}) at the model's "
              "native size.", "",
              "| side | scheduler | steps | images per call | images/s | peak GPU memory | speed (ours/plain) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    gen_rows = [("", "StableDiffusionPipeline", phases.get("generate 512 px", {}).get("results"),
                 phases.get("generate 512 px", {}).get("status", "missing")),
                ("SDXL: ", "StableDiffusionXLPipeline", sdxl.get("generate"), missing("generate"))]
    for prefix, plain_class, gen, status in gen_rows:
        labels = {"plain": f"{prefix}{plain_class} defaults", "avatar": f"{prefix}AvatarModel defaults"}
        if not gen:
            lines.append(f"| {prefix or '-'} | {status} | | | | | |")
            continue
        for side in ("plain", "avatar"):
            s = gen["sides"].get(side, {})
            if s.get("status") != "ok":
                lines.append(f"| {labels[side]} | {s.get('status', 'missing')} | | | | | |")
                continue
            lines.append(f"| {labels[side]} | {s['scheduler']} | {s['steps']} | {s['batch_size']} | "
                         f"{s['images_per_s']:.3f} | {_fmt(s.get('peak_vram_mb'), '.0f', ' MB')} | "
                         f"{_fmt(gen.get('speed_avatar_over_plain') if side == 'avatar' else None, '.2f', 'x')} |")
    lines += ["", "Targets (benchmarks, not tests): " + "; ".join(f"{k}: {v}" for k, v in report["targets"].items())]
    return "\n".join(lines)


def evaluate_targets(phases: dict[str, Any]) -> dict[str, str]:
    """Each issue-14 target as 'met (figure)', 'not met (figure)' or 'not measured'."""
    def verdict(value: float | None, target: float, fmt: str) -> str:
        if value is None:
            return "not measured"
        return f"{'met' if value >= target else 'not met'} ({format(value, fmt)}, target {format(target, fmt)})"

    lora = phases.get("train LoRA", {}).get("results") or {}
    speed = lora.get("speed_ours_over_reference")
    mem = lora.get("gpu_memory_ours_over_reference")
    ours_mfu = [(phases.get(n, {}).get("results") or {}).get("sides", {}).get("ours", {}).get("mfu")
                for n in ("train LoRA", "train full")]
    gen = (phases.get("generate 512 px", {}).get("results") or {}).get("speed_avatar_over_plain")
    return {
        "LoRA steps/s ours/reference >= 1.5x": verdict(speed, TARGETS["train_speed"], ".2f"),
        "LoRA peak GPU memory ours/reference <= 1.0x": "not measured" if mem is None else
        f"{'met' if mem <= 1.0 else 'not met'} ({mem:.2f})",
        "bf16 MFU >= 40% (best of ours)": verdict(max((m for m in ours_mfu if m is not None), default=None),
                                                 TARGETS["mfu"], ".1%"),
        "generation images/s ours/plain >= 2x": verdict(gen, TARGETS["generate_speed"], ".2f"),
    }


# ---------------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------------

def code_version(wheels: Path) -> dict[str, Any]:
    """The commit measured: from git, else (a copy of the tree without .git, as on the device machine)
    from ``LENSA_COMMIT`` or the commit ``gpu_wheels.sh`` recorded beside the wheels."""
    version = train_throughput.code_version()
    if not version["commit"]:
        recorded = wheels / "SOURCE_COMMIT"
        version["commit"] = os.environ.get("LENSA_COMMIT") or (
            recorded.read_text().strip() + " (when the wheels were built)" if recorded.is_file() else "")
    return version


def settings_for(args: argparse.Namespace) -> dict[str, Any]:
    eight_bit = importlib.util.find_spec("bitsandbytes") is not None
    if args.dry_run:
        return {"model_size": "tiny", "resolution": 64, "photos": 3, "class_images": 2, "steps": 4, "warmup": 1,
                "mixed_precision": "bf16", "use_8bit_adam": eight_bit, "threads": 1, "num_images": 1,
                "device": "cpu", "dtype": None, "sdxl_model_size": "tiny", "sdxl_resolution": 64, "sdxl_steps": 4,
                "sdxl_warmup": 1, "sdxl_num_images": 1}
    return {"model_size": "sd15", "resolution": 512, "photos": 5, "class_images": 10, "steps": args.steps,
            "warmup": args.warmup, "mixed_precision": "bf16", "use_8bit_adam": eight_bit,
            "threads": min(8, os.cpu_count() or 1), "num_images": args.num_images, "device": None, "dtype": None,
            "sdxl_model_size": "full", "sdxl_resolution": 1024, "sdxl_steps": args.sdxl_steps,
            "sdxl_warmup": args.sdxl_warmup, "sdxl_num_images": args.sdxl_num_images}


def run_phase(report: dict[str, Any], name: str, budget: Budget | None, fn: Any) -> Any:
    """Run one phase under its share of the budget; record ok/failed/skipped/timeout; return its results."""
    allowed = budget.allow(name) if budget is not None else None
    if budget is not None and allowed is None:
        report["phases"][name] = {"status": "skipped", "reason": f"out of time ({budget.left():.0f} s left of the "
                                  f"{budget.total_s:.0f} s budget)"}
        return None
    t0 = time.monotonic()
    entry: dict[str, Any]
    try:
        results = fn(allowed)
        ok = not isinstance(results, dict) or results.get("ok", True)
        entry = {"status": "ok" if ok else "failed", "results": results}
    except subprocess.TimeoutExpired as exc:
        entry = {"status": "timeout", "reason": f"killed after {exc.timeout:.0f} s"}
        results = None
    except Exception as exc:  # one phase's failure must not cost the others their turn
        entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[-3000:]}
        results = None
    entry["wall_s"] = time.monotonic() - t0
    report["phases"][name] = entry
    print(f"gpu_acceptance: {name}: {entry['status']} in {entry['wall_s']:.1f} s", flush=True)
    return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a few steps, no wheel step")
    p.add_argument("--out", type=Path, help="report folder (default: $OUT, else a new temporary folder)")
    p.add_argument("--work", type=Path, help="scratch folder for models and runs (default: a temporary folder)")
    p.add_argument("--wheels", type=Path, default=ROOT / ".gpu-wheels", help="the folder gpu_wheels.sh filled")
    p.add_argument("--site", type=Path, help="install the wheels into this folder and put it on PYTHONPATH "
                   "(default: into the running Python's environment)")
    p.add_argument("--no-wheels", action="store_true", help="use what is installed; skip the wheel step")
    p.add_argument("--reference-dir", type=Path, help="folder holding diffusers' train_dreambooth{,_lora,_lora_sdxl}.py "
                   "(default: WHEELS/reference)")
    p.add_argument("--budget", type=float, help="wall-time budget in seconds after the wheels; each phase's share "
                   f"scales with it (default {GPU_BUDGET_S:.0f}; dry run {DRY_RUN_BUDGET_S:.0f}: a shared CPU is slow)")
    p.add_argument("--steps", type=int, default=25, help="training steps per run (GPU)")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the median (GPU)")
    p.add_argument("--num-images", type=int, default=8, help="images per generation side (GPU)")
    p.add_argument("--sdxl-steps", type=int, default=15, help="SDXL training steps per run (GPU, 1024 px)")
    p.add_argument("--sdxl-warmup", type=int, default=3, help="SDXL steps left out of the median (GPU)")
    p.add_argument("--sdxl-num-images", type=int, default=2, help="images per SDXL generation side (GPU, 1024 px)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return _worker_main(argv[1:])
    args = parse_args(argv)
    report: dict[str, Any] = {"started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "dry_run": args.dry_run, "phases": {}}
    # 1. wheels, then the same script again with them (and this checkout's src/) on the path
    if args.dry_run or args.no_wheels or os.environ.get("LENSA_GPU_WHEELS_INSTALLED"):
        reason = ("dry run" if args.dry_run else
                  "installed by the parent process" if os.environ.get("LENSA_GPU_WHEELS_INSTALLED") else "--no-wheels")
        wheels_entry = json.loads(os.environ.get("LENSA_GPU_WHEELS_INSTALLED") or "null") or {
            "status": "skipped", "reason": reason}
        report["phases"]["wheels"] = wheels_entry
    else:
        t0 = time.monotonic()
        try:
            installed = install_wheels(args.wheels, args.site)
            entry: dict[str, Any] = {"status": "ok", "results": installed, "wall_s": time.monotonic() - t0}
        except RuntimeError as exc:
            entry = {"status": "failed", "reason": str(exc), "wall_s": time.monotonic() - t0}
        print(f"gpu_acceptance: wheels: {entry['status']} in {entry['wall_s']:.1f} s", flush=True)
        env = dict(os.environ, LENSA_GPU_WHEELS_INSTALLED=json.dumps(entry))
        if entry["status"] == "ok" and args.site:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(args.site), os.environ.get("PYTHONPATH", "")) if p)
        os.execve(sys.executable, [sys.executable, __file__, *argv], env)
    if str(ROOT / "src") not in sys.path:  # the checkout's code, also when it is not installed
        sys.path.insert(0, str(ROOT / "src"))
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", ""))
                                                   if p)

    out = (args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
           or Path(tempfile.mkdtemp(prefix="gpu-acceptance-")))
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu-acceptance-work-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = settings_for(args)
    report["settings"] = settings
    report["code"] = code_version(args.wheels)
    total = args.budget or (DRY_RUN_BUDGET_S if args.dry_run else GPU_BUDGET_S)
    scale = total / GPU_BUDGET_S
    budget = Budget(total, {k: v * scale for k, v in PHASE_BUDGET_S.items()},
                    {k: v * scale for k, v in PHASE_MIN_S.items()})
    report["budget_s"] = total

    env = run_phase(report, "environment", budget, lambda t: _run_worker(["environment"], t, settings["threads"]))
    report["environment"] = env
    device_name = (env or {}).get("device", "cpu")
    peak = peak_bf16_flops(device_name)
    report["peak_bf16_tflops"] = peak / 1e12 if peak else None
    no_cuda = env is not None and device_name == "cpu" and not args.dry_run
    if no_cuda:
        print("gpu_acceptance: no CUDA device; use --dry-run on a CPU machine", file=sys.stderr)

    run_phase(report, "gpu tests", budget, lambda t: run_gpu_tests(out, t))
    inputs = None
    if no_cuda:  # SD-1.5 shapes at 512 px on a CPU would only burn the budget
        report["phases"]["inputs"] = {"status": "skipped",
                                      "reason": "no CUDA device here (see environment); --dry-run runs on a CPU"}
    else:
        inputs = run_phase(report, "inputs", budget, lambda t: train_throughput.prepare_inputs(
            work, model_size=settings["model_size"], resolution=settings["resolution"],
            num_photos=settings["photos"], num_class_images=settings["class_images"]))
    flops = None
    if inputs:
        flops = run_phase(report, "flops", budget, lambda t: _run_worker(
            ["flops", str(inputs["model"]), str(settings["resolution"]), "2"], t, settings["threads"]))
    refs, ref_skip = reference_scripts(args.reference_dir or args.wheels / "reference")
    for method, name in (("lora", "train LoRA"), ("full", "train full")):
        if inputs:
            run_phase(report, name, budget, lambda t, m=method: train_case(
                m, settings, inputs, work, refs, ref_skip, flops, peak, t))
        else:
            report["phases"][name] = {"status": "skipped", "reason": "no inputs (see the inputs phase)"}
    if inputs:
        run_phase(report, "generate 512 px", budget, lambda t: generate_case(inputs["model"], settings, t))
    else:
        report["phases"]["generate 512 px"] = {"status": "skipped", "reason": "no inputs (see the inputs phase)"}
    if no_cuda:
        report["phases"]["SDXL 1024 px"] = {"status": "skipped",
                                            "reason": "no CUDA device here (see environment); --dry-run runs on a CPU"}
    else:
        run_phase(report, "SDXL 1024 px", budget, lambda t: sdxl_case(
            settings, work, args.reference_dir or args.wheels / "reference", peak, t))

    report["elapsed_s"] = time.monotonic() - budget.start
    report["targets"] = evaluate_targets(report["phases"])
    report["phases"] = {name: report["phases"].get(name, {"status": "skipped", "reason": "not reached"})
                        for name in PHASES}
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str))
    markdown = render_markdown(report)
    (out / REPORT_MD).write_text(markdown + "\n")
    print(markdown)
    print(f"\ngpu_acceptance: report in {out / REPORT_JSON} and {out / REPORT_MD}")
    failed = [n for n, ph in report["phases"].items() if ph["status"] in ("failed", "timeout")]
    return 1 if failed or no_cuda else 0


if __name__ == "__main__":
    raise SystemExit(main())
