"""Benchmark: PhotoSet (check + prepare) against a plain full-decode-then-resize baseline.

Prepares 20 synthetic 12 MP JPEG photos at 512 px, several times each side, alternating; each run is
its own subprocess so its peak RSS (``ru_maxrss`` from ``os.wait4``) belongs to that side alone.
Throughput is photos per second of work inside the child (interpreter start-up excluded).

    python benchmarks/photos.py [--photos 20] [--megapixels 12] [--repeats 3] [--resolution 512] [--cache DIR]

The baseline does less than PhotoSet (no face detection, no QC, no hashes), the way a simple script
would: open, full decode, EXIF transpose, RGB, centre crop, LANCZOS resize, PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OURS = r"""
import json, sys, time
from lensa_for_all.photos import PhotoSet
src, out, res = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
ps = PhotoSet.from_folder(src)
ps.prepare(out, resolution=res)
seconds = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "photos": len(ps.photos), "peak_kib": hwm}))
"""

BASELINE = r"""
import json, sys, time
from pathlib import Path
from PIL import Image, ImageOps
src, out, res = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
t = time.perf_counter()
n = 0
for p in sorted(src.iterdir()):
    with Image.open(p) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im.resize((res, res), Image.Resampling.LANCZOS).save(out / (p.stem + ".png"))
        n += 1
seconds = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "photos": n, "peak_kib": hwm}))
"""


def run_side(code: str, src: Path, out: Path, resolution: int) -> tuple[float, float]:
    """Run one side in a fresh process; return (photos per second, peak RSS in MB).

    Peak RSS is the child's own ``VmHWM`` from /proc (the high-water mark of its address space
    after exec); ``ru_maxrss`` from wait4 would include this parent's size at fork time.
    """
    out_text = subprocess.run([sys.executable, "-c", code, str(src), str(out), str(resolution)],
                              check=True, capture_output=True, text=True).stdout
    result = json.loads(out_text.strip().splitlines()[-1])
    return result["photos"] / result["seconds"], result["peak_kib"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--cache", type=Path, help="keep the generated photos here and reuse them next time")
    args = parser.parse_args()

    from lensa_for_all.testing.photos import make_photos

    width = int(math.sqrt(args.megapixels * 1e6 * 4 / 3))
    size = (width, width * 3 // 4)
    with tempfile.TemporaryDirectory(prefix="lensa-bench-photos-") as tmp:
        src = args.cache or Path(tmp) / "photos"
        t = time.perf_counter()
        files = sorted(src.glob("*.jpg")) if src.is_dir() else []
        if len(files) != args.photos:
            files = make_photos(src, args.photos, size=size, seed=0, quality=92)
        mb = sum(f.stat().st_size for f in files) / args.photos / 1e6
        print(f"made {args.photos} JPEGs of {size[0]}x{size[1]} ({mb:.1f} MB each) in "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
        results: dict[str, list[tuple[float, float]]] = {"baseline": [], "PhotoSet": []}
        for r in range(args.repeats):
            for name, code in (("baseline", BASELINE), ("PhotoSet", OURS)):
                out = Path(tmp) / f"out-{name}-{r}"  # a fresh folder: no idempotent shortcut
                results[name].append(run_side(code, src, out, args.resolution))
                rate, rss = results[name][-1]
                print(f"  repeat {r + 1} {name}: {rate:.2f} photos/s, peak RSS {rss:.0f} MB", file=sys.stderr)

    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in results.items()}
    # Each repeat runs both sides back to back, so their ratio cancels the load of a shared machine.
    ratios = [o[0] / b[0] for o, b in zip(results["PhotoSet"], results["baseline"], strict=True)]
    print(f"\n{args.photos} photos of {size[0]}x{size[1]} ({args.megapixels:g} MP JPEG, ~{mb:.1f} MB) -> "
          f"{args.resolution} px PNG; median of {args.repeats} runs; {os.cpu_count()} CPU cores, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}\n")
    print("| side | photos/s (median) | speed-up (median of paired runs) | peak RSS (MB) |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("baseline", "PhotoSet"):
        rate, rss = med[name]
        speed = "1.00x" if name == "baseline" else f"{statistics.median(ratios):.2f}x"
        print(f"| {name} | {rate:.2f} | {speed} | {rss:.0f} |")
    print("\nper-repeat speed-up: " + ", ".join(f"{r:.2f}x" for r in ratios) +
          f"; ratio of the medians: {med['PhotoSet'][0] / med['baseline'][0]:.2f}x")

if __name__ == "__main__":
    main()
