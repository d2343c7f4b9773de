"""Checkpoints that resume bit for bit, written only as safetensors and JSON (nothing pickled).

A checkpoint folder ``checkpoint-000120`` holds the trainable weights, the optimizer's tensors, the
learning-rate scheduler, every random number generator and the loop's own state (step, data order,
early-stopping counters). A folder is written beside its final name and renamed when complete, so a
spot interruption mid-save leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "PREFIX"]

PREFIX = "checkpoint-"


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [p for p in checkpoint_dir.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    found = list_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def _optimizer_to_files(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            name = f"{pid}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, meta


def _optimizer_from_files(tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_state(generator: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np
    import torch

    tensors = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state: Any = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def _restore_rng(tensors: Mapping[str, Any], meta: Mapping[str, Any], generator: Any) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["generator"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(checkpoint_dir: Path, step: int, *, trainable: Mapping[str, Any], optimizer: Any,
                    lr_scheduler: Any, generator: Any, state: Mapping[str, Any],
                    total_limit: int | None) -> Path:
    """Write ``checkpoint-<step>`` and keep only the newest ``total_limit`` ones."""
    from safetensors.torch import save_file

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"{PREFIX}{step:06d}"
    tmp = checkpoint_dir / f".{final.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    opt_tensors, opt_meta = _optimizer_to_files(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_meta = _rng_state(generator)
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    write_json_atomic(tmp / "optimizer.json", opt_meta)
    write_json_atomic(tmp / "rng.json", rng_meta)
    write_json_atomic(tmp / "lr_scheduler.json", lr_scheduler.state_dict())
    write_json_atomic(tmp / "state.json", {"step": step, **state})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if total_limit is not None:
        for old in list_checkpoints(checkpoint_dir)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, *, optimizer: Any, lr_scheduler: Any, generator: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore optimizer, scheduler and RNGs from ``path``; return (trainable weights, loop state)."""
    from safetensors.torch import load_file

    trainable = load_file(str(path / "trainable.safetensors"))
    opt_meta = json.loads((path / "optimizer.json").read_text())
    optimizer.load_state_dict(_optimizer_from_files(load_file(str(path / "optimizer.safetensors")), opt_meta))
    lr_scheduler.load_state_dict(json.loads((path / "lr_scheduler.json").read_text()))
    _restore_rng(load_file(str(path / "rng.safetensors")), json.loads((path / "rng.json").read_text()), generator)
    state = json.loads((path / "state.json").read_text())
    return trainable, state
