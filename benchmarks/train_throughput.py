#!/usr/bin/env python
"""Training throughput: our DreamBooth loop against diffusers' reference script, side by side.

Both sides train the same random-weight Stable Diffusion model (``lensa_for_all.testing.make_tiny_sd``)
on the same instance photos and the same folder of class images, with equivalent settings (batch 1,
prior preservation, constant learning rate, fp32, no validation or checkpoints), each run in its own
subprocess with ``OMP_NUM_THREADS=1``. For every run we record when each optimisation step finished
(the reference's ``tqdm`` bar is swapped in-process for one that timestamps its updates, so the script
itself is run unmodified; our loop reports steps through its progress callback) and the child's peak
RSS (``wait4`` rusage). The table shows the median seconds per step after warm-up, the steps/s ratio
(ours / reference, higher is better) and peak RSS with its ratio (ours / reference, lower is better).

The reference is never vendored: pass the path of ``examples/dreambooth/train_dreambooth.py`` (and
``train_dreambooth_lora.py`` for the LoRA rows) from a diffusers checkout matching the installed
diffusers. It imports torchvision, so run this benchmark from an environment that has it (see
``benchmarks/README.md``).

    python benchmarks/train_throughput.py --reference PATH/train_dreambooth.py \\
        --reference-lora PATH/train_dreambooth_lora.py --steps 30 --warmup 5 --repeats 3

SDXL (LoRA rows only): ``--family sdxl --reference-lora PATH/train_dreambooth_lora_sdxl.py`` trains the tiny
SDXL (``make_tiny_sd(path, family="sdxl")``) on both sides, text encoders at the SDXL script's default 5e-6.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "_work" / "throughput"

# case name -> (method, train_text_encoder)
CASES: dict[str, tuple[str, bool]] = {
    "full/TE frozen": ("full", False),
    "full/TE trained": ("full", True),
    "LoRA/TE frozen": ("lora", False),
    "LoRA/TE trained": ("lora", True),
}
CASE_KEYS = {"full-frozen": "full/TE frozen", "full-te": "full/TE trained",
             "lora-frozen": "LoRA/TE frozen", "lora-te": "LoRA/TE trained"}

TOKEN = "sks"
SUBJECT = "person"
INSTANCE_PROMPT = f"a photo of {TOKEN} {SUBJECT}"
CLASS_PROMPT = f"a photo of {SUBJECT}"
FULL_LR = 5e-6  # the reference's default
LORA_LR = 1e-4
LORA_RANK = 4  # the reference LoRA script's default (alpha = rank)
SDXL_TEXT_ENCODER_LR = 5e-6  # train_dreambooth_lora_sdxl.py's default --text_encoder_lr


# ---------------------------------------------------------------------------------------------------
# Inputs shared by both sides
# ---------------------------------------------------------------------------------------------------

def _write_png_photos(folder: Path, count: int, size: int, seed: int, kind: str) -> None:
    """Deterministic synthetic pictures: a coloured background, an ellipse 'face', some noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        bg = tuple(int(c) for c in rng.integers(0, 255, 3))
        img = Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        cx, cy = size // 2 + int(rng.integers(-size // 8, size // 8)), size // 2
        r = size // 4 + int(rng.integers(0, size // 8))
        fg = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((cx - r, cy - int(r * 1.2), cx + r, cy + int(r * 1.2)), fill=fg)
        noise = rng.normal(0, 12, (size, size, 3))
        arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{kind}_{i:03d}.png")


def prepare_inputs(work: Path, *, model_size: str, resolution: int, num_photos: int,
                   num_class_images: int, family: str = "sd1") -> dict[str, Path]:
    """Build (or reuse) the model, the instance photos and the class-image folder under ``work``."""
    from lensa_for_all.testing import make_tiny_sd

    name = f"model-{model_size}" if family == "sd1" else f"model-{family}-{model_size}"
    model = make_tiny_sd(work / name, model_size, family=family)  # type: ignore[arg-type]
    photos = work / f"photos-{num_photos}-{resolution}"
    if not photos.is_dir() or len(list(photos.iterdir())) != num_photos:
        _write_png_photos(photos, num_photos, resolution, seed=1, kind="photo")
    classes = work / f"class-{num_class_images}-{resolution}"
    if not classes.is_dir() or len(list(classes.iterdir())) != num_class_images:
        _write_png_photos(classes, num_class_images, resolution, seed=2, kind="class")
    return {"model": model, "photos": photos, "classes": classes}


# ---------------------------------------------------------------------------------------------------
# Worker side (runs in the measured child process)
# ---------------------------------------------------------------------------------------------------

class PhaseTimer:
    """Wall time per step phase, from wrappers around the library calls both loops make.

    The wrapped calls (UNet forward, VAE encode, text-encoder forward, backward, grad-norm clipping,
    optimiser step, zero_grad, fetching a batch) are the same on both sides, so the breakdowns compare.
    Only the outermost phase counts when calls nest; time outside every phase is reported as "other".
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}  # wall seconds
        self.cpu_totals: dict[str, float] = {}  # this thread's CPU seconds: robust to a busy machine
        self.counts: dict[str, int] = {}
        self.active = False
        self._depth = 0

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        import functools

        original = getattr(owner, attr)
        timer = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not timer.active or timer._depth:
                timer._depth += 1
                try:
                    return original(*args, **kwargs)
                finally:
                    timer._depth -= 1
            timer._depth += 1
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                timer._depth -= 1
                timer.add(label, time.perf_counter() - t0, time.thread_time() - c0)

        setattr(owner, attr, timed)

    def add(self, label: str, wall: float, cpu: float) -> None:
        self.totals[label] = self.totals.get(label, 0.0) + wall
        self.cpu_totals[label] = self.cpu_totals.get(label, 0.0) + cpu
        self.counts[label] = self.counts.get(label, 0) + 1

    def install(self) -> None:
        import torch
        import torch.utils.data.dataloader as dl
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
        from transformers import CLIPTextModel

        self.wrap(UNet2DConditionModel, "forward", "UNet forward")
        self.wrap(AutoencoderKL, "encode", "VAE encode")
        self.wrap(CLIPTextModel, "forward", "text encoder forward")
        self.wrap(torch.autograd, "backward", "backward")
        self.wrap(torch.nn.utils, "clip_grad_norm_", "grad-norm clipping")
        self.wrap(torch.optim.Optimizer, "zero_grad", "zero_grad")
        self.wrap(dl._BaseDataLoaderIter, "__next__", "data loading")
        try:
            import accelerate

            self.wrap(accelerate.Accelerator, "clip_grad_norm_", "grad-norm clipping")
        except ImportError:
            pass
        # Optimiser steps through the global hooks, so any torch optimiser class is covered.
        starts: list[tuple[float, float]] = []

        def pre(opt: Any, args: Any, kwargs: Any) -> None:
            starts.append((time.perf_counter(), time.thread_time()))
            self._depth += 1

        def post(opt: Any, args: Any, kwargs: Any) -> None:
            self._depth -= 1
            t0, c0 = starts.pop()
            if self.active and not self._depth:
                self.add("optimizer step", time.perf_counter() - t0, time.thread_time() - c0)

        register_optimizer_step_pre_hook(pre)
        register_optimizer_step_post_hook(post)


class StepClock:
    """Timestamps step completions; optionally profiles the steps after warm-up."""

    def __init__(self, warmup: int, profile_steps: int, profile_out: Path | None) -> None:
        self.start = time.perf_counter()
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []  # process CPU time: robust to other processes on the machine
        # VmHWM only grows, so these two and the final ru_maxrss place the peak: loading and caching
        # (up to the end of step 1), the other steps, or writing the artifacts.
        self.hwm_kb_at_first_step = 0
        self.hwm_kb_at_last_step = 0
        self.gpu_peak_bytes: int | None = None
        self.warmup = warmup
        self.profile_steps = profile_steps
        self.profile_out = profile_out
        self._profiler: Any = None
        # The phase wrappers time steps [warmup, warmup + N); torch.profiler, which slows the steps it
        # records, runs over the next N steps.
        self.phases = PhaseTimer() if profile_steps else None
        if self.phases is not None:
            self.phases.install()

    def phase_breakdown(self) -> dict[str, Any] | None:
        """ms per step for each phase over the timed window, wall and CPU (``None`` when not profiling)."""
        if self.phases is None or len(self.stamps) < self.warmup + self.profile_steps:
            return None
        first, last = self.warmup - 1, self.warmup + self.profile_steps - 1
        n = self.profile_steps
        out: dict[str, Any] = {"calls": dict(self.phases.counts)}
        for kind, stamps, totals in (("wall", self.stamps, self.phases.totals),
                                     ("cpu", self.cpu_stamps, self.phases.cpu_totals)):
            step_ms = 1000 * (stamps[last] - stamps[first]) / n
            phases = {k: 1000 * v / n for k, v in totals.items()}
            phases["other"] = step_ms - sum(phases.values())
            out[kind] = {"step_ms": step_ms, "phases_ms": phases}
        return out

    def step_done(self) -> None:
        self.stamps.append(time.perf_counter())
        self.cpu_stamps.append(time.process_time())
        self.hwm_kb_at_last_step = _vm_hwm_kb()
        if len(self.stamps) == 1:
            self.hwm_kb_at_first_step = self.hwm_kb_at_last_step
        self.gpu_peak_bytes = _gpu_peak_bytes()
        n = len(self.stamps)
        if self.phases is not None:
            self.phases.active = self.warmup <= n < self.warmup + self.profile_steps
        if self.profile_out is not None and self.profile_steps:
            if n == self.warmup + self.profile_steps:
                import torch

                self._profiler = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=False, with_stack=False)
                self._profiler.__enter__()
            elif n == self.warmup + 2 * self.profile_steps and self._profiler is not None:
                self._profiler.__exit__(None, None, None)
                table = self._profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
                table_total = self._profiler.key_averages().table(sort_by="cpu_time_total", row_limit=60)
                self.profile_out.write_text(
                    f"# torch.profiler over steps {self.warmup + self.profile_steps + 1}-"
                    f"{self.warmup + 2 * self.profile_steps}\n\n"
                    f"## by self CPU time\n{table}\n\n## by total CPU time\n{table_total}\n")
                self._profiler = None


def _gpu_peak_bytes() -> int | None:
    """Peak CUDA memory allocated by torch so far, or ``None`` without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def _proc_status_kb(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _vm_hwm_kb() -> int:
    return _proc_status_kb("VmHWM:")


def _vm_rss_kb() -> int:
    return _proc_status_kb("VmRSS:")


def _load_reference(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dreambooth_reference", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import the reference script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _allow_older_peft_in_transformers() -> None:
    """Let ``PreTrainedModel.add_adapter`` run with the installed peft.

    transformers 5.x asks for a newer peft than the newest one this machine's index has (0.21.2) before
    ``add_adapter``, which the reference LoRA script calls on the text encoder; the method itself only
    calls ``peft.inject_adapter_in_model``, which 0.21.2 has. Only the version gate is skipped, only in
    this child process, and only when it would refuse.
    """
    from transformers.integrations import peft as hf_peft

    try:
        hf_peft.check_peft_version(min_version=hf_peft.MIN_PEFT_VERSION)
    except ValueError:
        print(f"benchmark: skipping transformers' peft>={hf_peft.MIN_PEFT_VERSION} gate for add_adapter",
              flush=True)
        hf_peft.check_peft_version = lambda min_version: None


def run_reference(spec: dict[str, Any], clock: StepClock) -> None:
    """Run diffusers' script in-process, unmodified, with its tqdm bar replaced by a timing one."""
    from tqdm.auto import tqdm as base_tqdm

    method, train_te = spec["method"], spec["train_text_encoder"]
    module = _load_reference(Path(spec["reference_lora" if method == "lora" else "reference"]))

    class TimingTqdm(base_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            self._timed = kwargs.get("desc") == "Steps"
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if self._timed:
                clock.step_done()
            return super().update(n)

    module.tqdm = TimingTqdm
    if method == "lora" and train_te:
        _allow_older_peft_in_transformers()
    argv = [
        "--pretrained_model_name_or_path", spec["model"],
        "--instance_data_dir", spec["photos"],
        "--class_data_dir", spec["classes"],
        "--with_prior_preservation", "--prior_loss_weight", "1.0",
        "--num_class_images", str(spec["num_class_images"]),
        "--instance_prompt", INSTANCE_PROMPT,
        "--class_prompt", CLASS_PROMPT,
        "--resolution", str(spec["resolution"]),
        "--train_batch_size", "1",
        "--max_train_steps", str(spec["steps"]),
        "--learning_rate", str(LORA_LR if method == "lora" else FULL_LR),
        "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
        "--checkpointing_steps", str(10**9),
        "--mixed_precision", "no",
        "--report_to", "tensorboard",
        "--seed", "0",
        "--output_dir", spec["output_dir"],
    ]
    if method == "lora":
        argv += ["--rank", str(LORA_RANK)]
    if spec.get("family") == "sdxl":
        argv += ["--text_encoder_lr", str(SDXL_TEXT_ENCODER_LR)]
    if train_te:
        argv.append("--train_text_encoder")
    argv += spec.get("reference_extra_args", [])
    args = module.parse_args(argv)
    # The LoRA script's dataset reads a module-global ``args`` that only its ``__main__`` block sets.
    module.args = args
    module.main(args)


def run_ours(spec: dict[str, Any], clock: StepClock) -> None:
    """Run our loop in-process through its Python API with the same settings."""
    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training import loop as training_loop

    method, train_te = spec["method"], spec["train_text_encoder"]
    config = TrainingConfig(**{**dict(
        base_model=spec["model"], method=method, token=TOKEN, subject_class=SUBJECT,
        instance_prompt="a photo of {token} {subject_class}", class_prompt="a photo of {subject_class}",
        with_prior_preservation=True, prior_loss_weight=1.0, num_class_images=spec["num_class_images"],
        resolution=spec["resolution"], center_crop=True, random_flip=False,
        train_batch_size=1, gradient_accumulation_steps=1, max_train_steps=spec["steps"],
        learning_rate=LORA_LR if method == "lora" else FULL_LR, lr_scheduler="constant", lr_warmup_steps=0,
        max_grad_norm=1.0, train_text_encoder=train_te,
        lora_rank=LORA_RANK, lora_alpha=float(LORA_RANK), mixed_precision="no",
        checkpointing_steps=0, validation_steps=0, report_to="none", seed=0, resume_from=None,
        **({"text_encoder_learning_rate": SDXL_TEXT_ENCODER_LR} if spec.get("family") == "sdxl" else {}),
    ), **spec.get("ours_overrides", {})})  # overrides may replace any setting above (e.g. mixed_precision)

    def on_progress(progress: Any) -> None:
        if getattr(progress, "stage", "train") == "train" and progress.step > len(clock.stamps):
            clock.step_done()

    out = Path(spec["output_dir"])
    training_loop.train(
        config, instance_dir=Path(spec["photos"]), output_dir=out, class_dir=Path(spec["classes"]),
        checkpoint_dir=out.parent / "checkpoints", progress=on_progress,
    )


def worker_main(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    profile_out = Path(spec["profile_out"]) if spec.get("profile_out") else None
    clock = StepClock(spec["warmup"], spec.get("profile_steps", 0), profile_out)
    runner = run_reference if spec["side"] == "reference" else run_ours
    t0 = time.perf_counter()
    runner(spec, clock)
    total = time.perf_counter() - t0
    result = {
        "step_end_times": [s - clock.start for s in clock.stamps],
        "step_end_cpu_times": clock.cpu_stamps,
        "hwm_kb_at_last_step": clock.hwm_kb_at_last_step,
        "gpu_peak_bytes": clock.gpu_peak_bytes,
        "wall_s": total,
        "phases": clock.phase_breakdown(),
        "hwm_kb_at_first_step": clock.hwm_kb_at_first_step,
    }
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------------

def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
    })
    return env


def run_one(spec: dict[str, Any], run_dir: Path, threads: int, timeout_s: float | None = None) -> dict[str, Any]:
    """Run one side/case in a fresh child; return its step times and peak RSS.

    With ``timeout_s`` the child is killed after that many seconds and ``TimeoutError`` is raised.
    """
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    spec = {**spec, "output_dir": str(run_dir / "out"), "result": str(run_dir / "result.json")}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=2))
    log = (run_dir / "log.txt").open("w")
    proc = subprocess.Popen([sys.executable, __file__, "_worker", str(run_dir / "spec.json")],
                            stdout=log, stderr=subprocess.STDOUT, env=child_env(threads))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:  # type: ignore[operator]
            proc.kill()
            os.wait4(proc.pid, 0)
            log.close()
            raise TimeoutError(f"{spec['side']} run killed after {timeout_s:.0f} s; log: {run_dir / 'log.txt'}")
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        tail = (run_dir / "log.txt").read_text()[-3000:]
        raise RuntimeError(f"{spec['side']} run failed (exit {proc.returncode}); log tail:\n{tail}")
    result = json.loads((run_dir / "result.json").read_text())
    stamps = result["step_end_times"]
    warm = spec["warmup"]
    if len(stamps) < warm + 2:
        raise RuntimeError(f"{spec['side']}: only {len(stamps)} step times recorded (need > warm-up + 1)")
    deltas = [b - a for a, b in zip(stamps[warm - 1:], stamps[warm:], strict=False)]
    cpu = result["step_end_cpu_times"]
    cpu_deltas = [b - a for a, b in zip(cpu[warm - 1:], cpu[warm:], strict=False)]
    return {
        "median_s_per_step": statistics.median(deltas),
        "median_cpu_s_per_step": statistics.median(cpu_deltas),
        "step_s": deltas,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: KiB
        "train_hwm_mb": result["hwm_kb_at_last_step"] / 1024,
        "wall_s": result["wall_s"],
        "gpu_peak_mb": result["gpu_peak_bytes"] / 2**20 if result.get("gpu_peak_bytes") else None,
        "phases": result.get("phases"),
        "rss_by_stage_mb": {
            "setup and step 1": result["hwm_kb_at_first_step"] / 1024,
            "steps": result["hwm_kb_at_last_step"] / 1024,
            "after training": usage.ru_maxrss / 1024,
        },
    }


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def render_table(summary: dict[str, dict[str, Any]]) -> str:
    """Wall-clock s/step (the headline), CPU s/step (robust to a busy machine) and peak RSS, with ratios."""
    lines = [
        "| case | reference s/step | ours s/step | speed (ours/ref steps/s) | reference CPU s/step | "
        "ours CPU s/step | CPU speed | reference peak RSS | ours peak RSS | RSS ratio (ours/ref) |",
        "| --- |" + " ---: |" * 9,
    ]

    def cell(side: dict[str, Any] | None, key: str, fmt: str, suffix: str = "") -> str:
        return "-" if side is None else format(side[key], fmt) + suffix

    for case, row in summary.items():
        ref, ours = row.get("reference"), row.get("ours")
        both = ref is not None and ours is not None
        speed = ref["median_s_per_step"] / ours["median_s_per_step"] if both else None  # type: ignore[index]
        cpu_speed = ref["median_cpu_s_per_step"] / ours["median_cpu_s_per_step"] if both else None  # type: ignore[index]
        mem = ours["peak_rss_mb"] / ref["peak_rss_mb"] if both else None  # type: ignore[index]
        lines.append(
            f"| {case} | {cell(ref, 'median_s_per_step', '.3f')} | {cell(ours, 'median_s_per_step', '.3f')} | "
            f"{_fmt_ratio(speed)} | {cell(ref, 'median_cpu_s_per_step', '.3f')} | "
            f"{cell(ours, 'median_cpu_s_per_step', '.3f')} | {_fmt_ratio(cpu_speed)} | "
            f"{cell(ref, 'peak_rss_mb', '.0f', ' MB')} | {cell(ours, 'peak_rss_mb', '.0f', ' MB')} | "
            f"{_fmt_ratio(mem)} |")
    gpu = {case: row for case, row in summary.items()
           if any(side and side.get("gpu_peak_mb") for side in row.values())}
    if gpu:
        lines += ["", "| case | reference peak GPU memory | ours peak GPU memory | ratio (ours/ref) |",
                  "| --- | ---: | ---: | ---: |"]
        for case, row in gpu.items():
            ref, ours = row.get("reference"), row.get("ours")
            r_mb = ref.get("gpu_peak_mb") if ref else None
            o_mb = ours.get("gpu_peak_mb") if ours else None
            lines.append(f"| {case} | {'-' if r_mb is None else f'{r_mb:.0f} MB'} | "
                         f"{'-' if o_mb is None else f'{o_mb:.0f} MB'} | "
                         f"{_fmt_ratio(o_mb / r_mb if r_mb and o_mb else None)} |")
    return "\n".join(lines)


def render_breakdowns(breakdowns: dict[str, dict[str, Any]], kind: str = "cpu") -> str:
    """One table per case: ms per step in each phase, per side (``kind``: "cpu" or "wall")."""
    blocks = []
    for case, sides in breakdowns.items():
        per_side = {side: (b[kind] if b else None) for side, b in sides.items()}
        names = sorted({k for b in per_side.values() if b for k in b["phases_ms"]},
                       key=lambda k: (k == "other", k))
        header = f"| phase ({kind} ms/step) | " + " | ".join(per_side) + " |"
        lines = [f"{case}:", "", header, "| --- |" + " ---: |" * len(per_side)]
        for name in names:
            cells = []
            for b in per_side.values():
                ms = b["phases_ms"].get(name) if b else None
                cells.append("-" if ms is None or b is None else f"{ms:.1f} ({100 * ms / b['step_ms']:.0f}%)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("| **step** | " + " | ".join(f"{b['step_ms']:.1f}" if b else "-" for b in per_side.values())
                     + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_rss_by_stage(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """Median peak RSS (MB) reached by the end of step 1, by the last step, and over the whole process."""
    stages = ("setup and step 1", "steps", "after training")
    lines = ["| case | side | peak RSS by end of step 1 | by last step | whole process |",
             "| --- | --- |" + " ---: |" * len(stages)]
    for case, sides in raw.items():
        for side, runs in sides.items():
            if runs:
                cells = [f"{statistics.median(r['rss_by_stage_mb'][st] for r in runs):.0f}" for st in stages]
                lines.append(f"| {case} | {side} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _slug(case: str) -> str:
    return case.replace("/", "-").replace(" ", "_")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats (of each run's median s/step, of peak RSS); the spread too."""
    medians = [r["median_s_per_step"] for r in runs]
    cpu_medians = [r["median_cpu_s_per_step"] for r in runs]
    return {
        "median_s_per_step": statistics.median(medians),
        "run_medians": medians,
        "median_cpu_s_per_step": statistics.median(cpu_medians),
        "run_cpu_medians": cpu_medians,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "peak_rss_mb_range": [min(r["peak_rss_mb"] for r in runs), max(r["peak_rss_mb"] for r in runs)],
        "train_hwm_mb": statistics.median(r["train_hwm_mb"] for r in runs),
        "gpu_peak_mb": max((r["gpu_peak_mb"] or 0 for r in runs), default=0) or None,
        "repeats": len(runs),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the library's working tree differed from it."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(HERE.parent), *cmd], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty_library_files": git("status", "--porcelain", "src/lensa_for_all").splitlines()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, help="diffusers' examples/dreambooth/train_dreambooth.py")
    p.add_argument("--reference-lora", type=Path,
                   help="diffusers' examples/dreambooth/train_dreambooth_lora.py (default: beside --reference)")
    p.add_argument("--sides", default="reference,ours", help="comma list of: reference, ours")
    p.add_argument("--cases", default=",".join(CASE_KEYS), help=f"comma list of: {', '.join(CASE_KEYS)}")
    p.add_argument("--model-size", default="small", choices=["tiny", "small", "sd15"])
    p.add_argument("--family", default="sd1", choices=["sd1", "sdxl"],
                   help="sdxl: the tiny SDXL, LoRA cases only, --reference-lora is train_dreambooth_lora_sdxl.py")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--photos", type=int, default=5, help="instance photos")
    p.add_argument("--class-images", type=int, default=10, help="class images (present, none generated)")
    p.add_argument("--steps", type=int, default=30, help="optimisation steps per run")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side and case (median of medians); 0 with --profile-steps: profile only")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both sides")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="after the timed runs, one instrumented run per side and case: a per-phase "
                   "breakdown of this many steps, then a torch.profiler table of as many more")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder (models, runs, results)")
    p.add_argument("--json", type=Path, help="write the raw results here (default: WORK/results.json)")
    args = p.parse_args(argv)
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    args.cases = [CASE_KEYS[c.strip()] for c in args.cases.split(",") if c.strip()]
    if args.family == "sdxl":
        if any(CASES[c][0] != "lora" for c in args.cases):
            p.error("--family sdxl compares LoRA only (pass --cases lora-frozen,lora-te)")
        if args.model_size != "tiny":
            p.error("--family sdxl is built at --model-size tiny only")
    if "reference" in args.sides:
        needs_full = any(CASES[c][0] == "full" for c in args.cases)
        if args.reference is None and (needs_full or args.reference_lora is None):
            p.error("--reference PATH is needed to run the reference side (or pass --sides ours)")
        if args.reference_lora is None:
            args.reference_lora = args.reference.with_name("train_dreambooth_lora.py")
        needs_lora = any(CASES[c][0] == "lora" for c in args.cases)
        for path in ([args.reference] if needs_full else []) + ([args.reference_lora] if needs_lora else []):
            if not path.is_file():
                p.error(f"reference script {path} does not exist")
    if args.repeats < 1 and not args.profile_steps:
        p.error("--repeats 0 only makes sense with --profile-steps")
    if args.warmup < 1 or args.steps < args.warmup + 3:
        p.error("need --warmup >= 1 and --steps >= warmup + 3")
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["_worker"]:
        return worker_main(Path(argv[1]))
    args = parse_args(argv)
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    inputs = prepare_inputs(work, model_size=args.model_size, resolution=args.resolution,
                            num_photos=args.photos, num_class_images=args.class_images, family=args.family)
    base_spec = {
        "family": args.family,
        "model": str(inputs["model"]), "photos": str(inputs["photos"]), "classes": str(inputs["classes"]),
        "num_class_images": args.class_images, "resolution": args.resolution,
        "steps": args.steps, "warmup": args.warmup,
        "reference": str(args.reference.resolve()) if args.reference else None,
        "reference_lora": str(args.reference_lora.resolve()) if args.reference_lora else None,
    }
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {c: {s: [] for s in args.sides} for c in args.cases}
    # Interleave sides and cases within each repeat so background load hits both sides alike.
    for rep in range(args.repeats):
        for case in args.cases:
            method, train_te = CASES[case]
            for side in args.sides:
                slug = f"{side}-{_slug(case)}-r{rep}"
                spec = {**base_spec, "side": side, "method": method, "train_text_encoder": train_te}
                res = run_one(spec, work / "runs" / slug, args.threads)
                raw[case][side].append(res)
                print(f"[{slug}] median {res['median_s_per_step']:.3f} s/step "
                      f"({res['median_cpu_s_per_step']:.3f} CPU s/step), "
                      f"peak RSS {res['peak_rss_mb']:.0f} MB, wall {res['wall_s']:.1f} s", flush=True)
    breakdowns: dict[str, dict[str, Any]] = {}
    if args.profile_steps:
        # Separate, instrumented runs: their step times never enter the table.
        (work / "profiles").mkdir(exist_ok=True)
        for case in args.cases:
            method, train_te = CASES[case]
            for side in args.sides:
                slug = f"{side}-{_slug(case)}"
                spec = {**base_spec, "side": side, "method": method, "train_text_encoder": train_te,
                        "steps": args.warmup + 2 * args.profile_steps + 1, "profile_steps": args.profile_steps,
                        "profile_out": str(work / "profiles" / f"{slug}.txt")}
                res = run_one(spec, work / "runs" / f"profile-{slug}", args.threads)
                breakdowns.setdefault(case, {})[side] = res["phases"]

                print(f"[profile {slug}] written to {spec['profile_out']}", flush=True)
    summary = {case: {side: summarise(runs) for side, runs in sides.items() if runs}
               for case, sides in raw.items()}
    table = render_table(summary)
    out = args.json or work / "results.json"
    version = code_version()
    out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "code": version,
                               "summary": summary,
                               "runs": raw, "phase_breakdowns": breakdowns}, indent=2))
    print()
    print(f"{args.family} {args.model_size} model, {args.resolution} px, batch 1 + prior preservation, "
          f"{args.steps} steps ({args.warmup} warm-up), {args.repeats} repeats, OMP_NUM_THREADS={args.threads}; "
          f"commit {version['commit'] or '?'}"
          + (f" with {len(version['dirty_library_files'])} uncommitted library file(s)"
             if version["dirty_library_files"] else ""))
    print(table)
    if any(raw[c][s] for c in raw for s in raw[c]):
        print()
        print(render_rss_by_stage(raw))
    if breakdowns:
        print()
        print(render_breakdowns(breakdowns))
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
