"""Benchmark: face likeness on one CPU core (dlib HOG detector + 5-point landmarks + ResNet embedding).

Measures, on 512 x 512 photos of three real people (the portraits the tests use: scikit-image's astronaut,
matplotlib's Grace Hopper, mahotas' author), pinned to one core:

- embeddings/s: ``FaceIdentity.faces`` per photo (decode excluded), split into detection and embedding;
- the photo check's extra cost per photo (``check_identity`` on JPEG files, decoding included);
- what ``generate(keep_best=N)`` adds per kept avatar: scoring ``c`` candidates per kept avatar
  (``pick_best``), plus ``c - 1`` extra renders, which depend on the GPU and are not measured here.

    python benchmarks/likeness.py [--photos 24] [--repeats 3] [--candidates-per-kept 2]

Needs the likeness extra and the dev extra's portrait packages (``pip install -e ".[dev]"``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"core {core}"
    return "not pinned (no sched_setaffinity)"


def _photos(n: int) -> list:
    from likeness_helpers import augmented, portrait

    people = ["astronaut", "hopper", "coelho"]
    return [augmented(portrait(people[i % 3]), i, size=(512, 512)) for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates-per-kept", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    pinned = _pin_one_core()

    import numpy as np

    from lensa_for_all.generation.pack import Avatar
    from lensa_for_all.likeness import FaceIdentity, _models
    from lensa_for_all.photos.identity import check_identity

    t = time.perf_counter()
    identity = FaceIdentity()
    load_s = time.perf_counter() - t
    detector, landmarks, resnet = _models()
    photos = _photos(args.photos)
    arrays = [np.asarray(p) for p in photos]

    per_photo, detect, embed = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        found = [identity.faces(p) for p in photos]
        per_photo.append((time.perf_counter() - t) / len(photos))
        assert all(found), "every benchmark photo shows a face"
        t = time.perf_counter()
        rects = [detector(a, 0) for a in arrays]
        detect.append((time.perf_counter() - t) / len(arrays))
        t = time.perf_counter()
        for a, r in zip(arrays, rects, strict=True):
            resnet.compute_face_descriptor(a, landmarks(a, r[0]))
        embed.append((time.perf_counter() - t) / len(arrays))

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, p in enumerate(photos):
            paths.append(Path(tmp) / f"{i:02d}.jpg")
            p.save(paths[-1], quality=90)
        check = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            check_identity(paths, identity)
            check.append((time.perf_counter() - t) / len(paths))

    from lensa_for_all.generation.best import pick_best

    refs = identity.references(photos[0:9:3])  # the astronaut's
    avatars = [Avatar(image=p, prompt="p", negative_prompt="", seed=i, num_inference_steps=1, guidance_scale=7.0,
                      scheduler="ddim", width=512, height=512) for i, p in enumerate(photos)]
    score = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        pick_best(avatars, len(avatars) // args.candidates_per_kept, refs, identity)
        score.append((time.perf_counter() - t) / len(avatars))

    med = statistics.median
    c = args.candidates_per_kept
    print(f"lensa-for-all likeness benchmark: {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}, pinned to {pinned}, {args.photos} photos x {args.repeats} repeats")
    print(f"models load: {load_s:.2f} s (once per process)")
    print("| measure | median | per second |")
    print("| --- | ---: | ---: |")
    for name, values in (("faces() per 512 px photo (detect + embed)", per_photo),
                         ("  detection only", detect), ("  landmarks + ResNet embedding only", embed),
                         ("photo check per photo (decode JPEG + faces)", check),
                         ("keep_best: score one 512 px candidate", score)):
        print(f"| {name} | {med(values) * 1000:.0f} ms | {1 / med(values):.2f} |")
    print(f"keep_best overhead per kept avatar at {c} candidates each: {c * med(score):.2f} s of scoring on one "
          f"core + {c - 1} extra render(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
