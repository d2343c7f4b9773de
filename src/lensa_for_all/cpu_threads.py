"""How many threads torch should use on a machine without a GPU, chosen by the model's size.

Small models are latency-bound: their kernels are too short for a second thread to pay for its
synchronisation, and on a shared machine extra threads mostly wait for each other. The table below comes
from ``benchmarks/cpu_threads.py`` (figures and method in benchmarks/README.md, "CPU threads"): on two
shared cores one thread was fastest for every size. Full-size Stable Diffusion keeps torch's default (every
core) because its convolutions are large enough to scale on an idle many-core machine, which was not measured.

The command line applies it to ``run``, ``train`` and ``demo``; from Python, wrap a run in
:func:`cpu_threads_for`. An ``OMP_NUM_THREADS`` the user set always wins.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

__all__ = ["ModelSize", "THREADS_BY_SIZE", "TRAIN_STEP_S", "model_size", "recommended_threads", "cpu_threads_for"]

ModelSize = Literal["tiny", "small", "sd15"]

THREADS_BY_SIZE: dict[str, int | None] = {"tiny": 1, "small": 1, "sd15": None}
"""Thread count per model size; ``None`` means every core (torch's default)."""

TRAIN_STEP_S: dict[str, float] = {"tiny": 0.13, "small": 0.41, "sd15": 31.0}
"""Measured seconds per LoRA training step on one shared CPU core, per model size (for the plan's estimate)."""


def model_size(base_model: str | os.PathLike[str]) -> ModelSize:
    """``tiny``/``small``/``sd15`` from the UNet's widest block (64 / under 640 / SD-sized); Hub ids are SD-sized."""
    config = Path(base_model) / "unet" / "config.json"
    try:
        widths = json.loads(config.read_text(encoding="utf-8")).get("block_out_channels") or []
        widest = max(int(w) for w in widths)
    except (OSError, ValueError, TypeError):
        return "sd15"
    if widest <= 64:
        return "tiny"
    return "small" if widest < 640 else "sd15"


def recommended_threads(base_model: str | os.PathLike[str], cores: int | None = None) -> int:
    """The thread count to use on CPU for ``base_model`` on a machine with ``cores`` cores (default: this one)."""
    cores = cores or os.cpu_count() or 1
    chosen = THREADS_BY_SIZE[model_size(base_model)]
    return cores if chosen is None else min(chosen, cores)


def _has_accelerator() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(torch.cuda.is_available() or (mps is not None and mps.is_available()))


@contextlib.contextmanager
def cpu_threads_for(base_model: str | os.PathLike[str]) -> Iterator[int | None]:
    """Use the recommended thread count while inside, in this process and in training subprocesses.

    Yields the count, or ``None`` when nothing was changed: there is a GPU, or ``OMP_NUM_THREADS`` is set.
    """
    if os.environ.get("OMP_NUM_THREADS") or _has_accelerator():
        yield None
        return
    import torch

    threads = recommended_threads(base_model)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # LocalBackend's training subprocess inherits it
    try:
        yield threads
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
        torch.set_num_threads(before)
