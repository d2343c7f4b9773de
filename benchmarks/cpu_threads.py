"""CPU thread count vs speed, per model size: which torch thread count trains and renders fastest on CPU.

For each model size of ``lensa_for_all.testing.make_tiny_sd`` (``tiny``: 64 px test-sized, ``small``:
SD-shaped at 128 px, ``sd15``: the real SD-1.5 UNet at 512 px) and each thread count, a fresh child
process (``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set to that count) times:

- a LoRA training step: UNet forward, backward and an AdamW step on rank-4 LoRA weights of the
  attention projections (what the DreamBooth loop does per step, without the text encoder);
- a generation step: one classifier-free-guidance UNet forward (batch 2) without gradients.

Each figure is the median over ``--repeats`` children of the median step time after one warm-up step.
Run it on an otherwise idle machine; another process competing for the cores makes the larger thread
counts look worse than they are. Results and method: benchmarks/README.md ("CPU threads").

    python benchmarks/cpu_threads.py --sizes tiny small --threads 1 2 --repeats 5
    python benchmarks/cpu_threads.py --sizes sd15 --threads 1 2 --repeats 1 --steps 1

``--demo`` instead times the whole ``lensa-for-all demo`` (a fresh folder each time, default settings) with
the thread count the command picks (``auto``) and with torch's default of every core, which is what the
``demo --help`` time claim rests on:

    python benchmarks/cpu_threads.py --demo --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(size: str, model: str, threads: int, steps: int) -> dict[str, float]:
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    side = int(unet.config.sample_size)
    channels = int(unet.config.in_channels)
    context = torch.randn(1, 77, int(unet.config.cross_attention_dim))
    latents = torch.randn(1, channels, side, side)

    def train_step() -> None:
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (1,))
        pred = unet(latents + noise, t, context).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer_step() -> None:
        with torch.no_grad():
            unet(torch.cat([latents, latents]), torch.tensor([500, 500]), torch.cat([context, context]))

    timings: dict[str, float] = {}
    for name, step in (("train", train_step), ("generate", infer_step)):
        step()  # warm-up: allocator, kernels
        seconds = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - t0)
        timings[name] = statistics.median(seconds)
    timings["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return timings


def _time_demo(repeats: int, threads: list[int] | None) -> None:
    """Wall time of the whole demo, fresh each time: the thread count it picks vs torch's default (all cores)."""
    import shutil

    cores = os.cpu_count() or 1
    settings: list[tuple[str, str | None]] = [("auto", None), (f"{cores} (torch default)", str(cores))]
    settings += [(str(t), str(t)) for t in threads or [] if str(t) not in {v for _, v in settings}]
    for label, value in settings:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        if value is not None:
            env["OMP_NUM_THREADS"] = value
        seconds = []
        for _ in range(repeats):
            folder = Path(tempfile.mkdtemp(prefix="demo-time-"))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lensa_for_all", "-q", "demo", "--out", str(folder / "demo")],
                           env=env, check=True, capture_output=True)
            seconds.append(time.perf_counter() - t0)
            shutil.rmtree(folder, ignore_errors=True)
        print(f"demo, threads {label}: median {statistics.median(seconds):.0f} s "
              f"(runs: {', '.join(f'{s:.0f}' for s in seconds)}; load average now {os.getloadavg()[0]:.1f})",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=["tiny", "small", "sd15"],
                        help="model sizes to measure")
    parser.add_argument("--threads", nargs="+", type=int, default=None,
                        help="thread counts (default 1, 2 and all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="child processes per size and thread count")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per child (after one warm-up)")
    parser.add_argument("--models", default=None, help="folder for the built models (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--demo", action="store_true", help="time `lensa-for-all demo` end to end instead")
    parser.add_argument("--child", nargs=4, metavar=("SIZE", "MODEL", "THREADS", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, model, threads, steps = args.child
        print(json.dumps(_child(size, model, int(threads), int(steps))))
        return

    if args.demo:
        _time_demo(args.repeats, args.threads)
        return

    from lensa_for_all.testing import make_tiny_sd

    cores = os.cpu_count() or 1
    thread_counts = sorted(set(args.threads or [1, 2, cores]))
    root = Path(args.models or tempfile.mkdtemp(prefix="cpu-threads-"))
    rows = []
    for size in args.sizes:
        model = make_tiny_sd(root / size, size)  # type: ignore[arg-type]
        for threads in thread_counts:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, __file__, "--child", size, str(model), str(threads),
                                      str(args.steps)], env=env, capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            row = {"size": size, "threads": threads, "repeats": args.repeats, "steps": args.steps,
                   "train_s": statistics.median(r["train"] for r in runs),
                   "generate_s": statistics.median(r["generate"] for r in runs),
                   "train_range": [min(r["train"] for r in runs), max(r["train"] for r in runs)],
                   "generate_range": [min(r["generate"] for r in runs), max(r["generate"] for r in runs)],
                   "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs)}
            rows.append(row)
            print(f"{size:5} threads={threads}: train {row['train_s']:.3f} s/step, generate "
                  f"{row['generate_s']:.3f} s/step, peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    print()
    print("| size | threads | train s/step | generate s/step | peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['size']} | {r['threads']} | {r['train_s']:.3f} | {r['generate_s']:.3f} | "
              f"{r['peak_rss_mb']:.0f} MB |")
    print(f"\n{cores} cores; load average before: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": cores, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
