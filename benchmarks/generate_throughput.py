"""Generation throughput: AvatarModel defaults against a plain StableDiffusionPipeline with its defaults.

Both sides render the same prompts at the same size on the same random-weight model, one image per
pipeline call, each side in its own subprocess (so peak RSS is its own). The plain side keeps the
pipeline's defaults (PNDM, 50 steps); AvatarModel keeps its own (DPM++ 2M Karras, 25 steps, device
and dtype choice). Runs alternate between sides; the speed-up is the median of the per-repeat ratios
(both runs of a repeat see about the same load on a shared machine), images/s the median per side.
``--threads`` sets OMP/MKL threads in the children (1 by default: steadier on a busy machine).

    python benchmarks/generate_throughput.py                       # "small" model, 128 px, 4 images, CPU
    python benchmarks/generate_throughput.py --size sd15 --num-images 8   # on a GPU: SD-1.5 shapes, 512 px, fp16
    python benchmarks/generate_throughput.py --family sdxl --size tiny    # tiny SDXL against StableDiffusionXLPipeline

The plain side uses the model family's own pipeline class (``StableDiffusionXLPipeline`` for SDXL: Euler,
50 steps).
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
from typing import Any

PROMPTS = [
    "portrait photo of ohwx person, soft light, 85mm",
    "ohwx person as a fantasy knight, detailed armor",
    "anime portrait of ohwx person, vibrant colors",
    "oil painting of ohwx person, rich brush strokes",
]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(side: str, model_path: str, num_images: int, device: str | None, dtype: str | None,
           batch_size: int | None = None) -> dict[str, Any]:
    """Load, warm up with the side's own workload at 2 steps, then time ``num_images`` images (a subprocess)."""
    import torch

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(num_images)]
    if side in ("plain", "plain_batched"):
        from lensa_for_all.generation.device import choose_device
        from lensa_for_all.generation.sources import pipeline_family

        choice = choose_device(device, dtype)  # same device/dtype as AvatarModel would pick
        family = pipeline_family(model_path)
        assert family is not None, f"{model_path} has no readable model_index.json"
        pipeline_class = family.pipeline_class()  # StableDiffusion(XL)Pipeline
        pipe = pipeline_class.from_pretrained(model_path, torch_dtype=choice.dtype).to(choice.device)
        pipe.set_progress_bar_config(disable=True)
        if side == "plain":  # warm up with this side's own call shape
            pipe(prompts[0], num_inference_steps=2)
        else:
            pipe(prompts, num_inference_steps=2)
        sync = torch.cuda.synchronize if choice.kind == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        if side == "plain":
            for i, p in enumerate(prompts):
                pipe(p, generator=torch.Generator("cpu").manual_seed(i))  # defaults: 50 steps (SD 1.5: PNDM, CFG 7.5)
        else:  # the same defaults, all prompts in one call
            pipe(prompts, generator=[torch.Generator("cpu").manual_seed(i) for i in range(num_images)])
        sync()
        seconds = time.perf_counter() - start
        steps = pipe.scheduler.num_inference_steps
        sched = type(pipe.scheduler).__name__
    else:
        from lensa_for_all.generation import AvatarModel

        model = AvatarModel.load(model_path, device=device, dtype=dtype)
        model.generate(prompts, num_inference_steps=2, seed=0, batch_size=batch_size)  # warm up, own call shape
        cuda = model.runner.device.kind == "cuda"  # type: ignore[attr-defined]
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        pack = model.generate(prompts, seed=0, batch_size=batch_size)  # defaults: DPM++ 2M Karras, 25 steps
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        steps = pack[0].num_inference_steps
        sched = pack[0].scheduler
    out = {"side": side, "images": num_images, "seconds": seconds, "images_per_s": num_images / seconds,
           "peak_rss_mb": _peak_rss_mb(), "steps": steps, "scheduler": sched,
           "device": str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
           "torch_threads": torch.get_num_threads(),
           "batch_size": pack[0].batch_size if side == "avatar" else (1 if side == "plain" else num_images)}
    if torch.cuda.is_available():
        out["peak_vram_mb"] = torch.cuda.max_memory_allocated() / 1024**2
    return out


def run_side(side: str, model_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", side, "--model", str(model_path), "--num-images",
           str(args.num_images)]
    if args.device:
        cmd += ["--device", args.device]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    if args.avatar_batch_size:
        cmd += ["--avatar-batch-size", str(args.avatar_batch_size)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISABLE_TQDM": "1"}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    # args.timeout (optional, seconds): benchmarks/gpu_acceptance.py bounds each side's wall time
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                         timeout=getattr(args, "timeout", None))
    if res.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{res.stderr[-3000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "sd15"])
    parser.add_argument("--family", default="sd1", choices=["sd1", "sdxl"],
                        help="model family of the random model (sdxl: size tiny only)")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per side (0: torch's default)")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--model-dir", help="where the random model is built (default: a temp folder)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--avatar-batch-size", type=int, help="override AvatarModel's batch size (default: its own)")
    parser.add_argument("--batched-baseline", action="store_true",
                        help="also run the plain pipeline with all prompts in one call")
    parser.add_argument("--worker", choices=["plain", "plain_batched", "avatar"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.num_images, args.device, args.dtype,
                                args.avatar_batch_size)))
        return 0

    from lensa_for_all.testing import make_tiny_sd

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.model_dir) if args.model_dir else Path(tmp)
        model_path = make_tiny_sd(root / f"bench-{args.family}-{args.size}", args.size, family=args.family)
        sides = ["plain", "avatar"] + (["plain_batched"] if args.batched_baseline else [])
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side in sides:
                runs[side].append(run_side(side, model_path, args))
    med = {side: statistics.median(x["images_per_s"] for x in r) for side, r in runs.items()}
    rss = {side: statistics.median(x["peak_rss_mb"] for x in r) for side, r in runs.items()}
    ratios = [a["images_per_s"] / p["images_per_s"] for p, a in zip(runs["plain"], runs["avatar"], strict=True)]
    speedup = statistics.median(ratios)
    a = runs["avatar"][0]
    print(f"model: random {args.family} '{args.size}' at its native size, {args.num_images} images, device {a['device']}, "
          f"{a['torch_threads']} thread(s), {args.repeats} alternating runs per side")
    print("| side | scheduler | steps | images per call | images/s (median) | peak RSS MB (median) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    plain = "StableDiffusionXLPipeline" if args.family == "sdxl" else "StableDiffusionPipeline"
    labels = {"plain": f"{plain} defaults, one call per image", "avatar": "AvatarModel defaults",
              "plain_batched": f"{plain} defaults, all prompts in one call"}
    for side in runs:
        r = runs[side][0]
        print(f"| {labels[side]} | {r['scheduler']} | {r['steps']} | {r['batch_size']} | {med[side]:.3f} | "
              f"{rss[side]:.0f} |")
    print(f"speed-up (median of paired runs): {speedup:.2f}x; per repeat: "
          f"{', '.join(f'{x:.2f}x' for x in ratios)}; peak RSS avatar/plain: {rss['avatar'] / rss['plain']:.3f}")
    if "plain_batched" in runs:
        pb = [a["images_per_s"] / b["images_per_s"] for b, a in zip(runs["plain_batched"], runs["avatar"], strict=True)]
        print(f"speed-up over the one-call baseline (median of paired runs): {statistics.median(pb):.2f}x; "
              f"peak RSS avatar/plain_batched: {rss['avatar'] / rss['plain_batched']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "speedup": speedup}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
