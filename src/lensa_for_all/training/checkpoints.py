"""Checkpoints that resume bit for bit, written only as safetensors and JSON (nothing pickled).

A checkpoint folder ``checkpoint-000120`` holds the trainable weights, the optimizer's tensors, the
learning-rate scheduler, every random number generator and the loop's own state (step, data order,
early-stopping counters). Each one is complete or invisible: the files are written and fsynced in a
hidden folder beside the final name, ``manifest.json`` (every file's size and sha256) is written last,
and only then is the folder renamed into place. Resuming verifies the manifest and falls back to the
newest checkpoint that verifies, saying which one it skipped and why, so a file truncated by a full
disk, a spot reclaim mid-save or a half-finished S3 sync costs a few steps, never the run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..atomic import fsync_dir, write_json_atomic
from ..digests import file_sha256

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "verify_checkpoint",
           "valid_checkpoints", "PREFIX", "MANIFEST"]

PREFIX = "checkpoint-"
MANIFEST = "manifest.json"
_PARTIAL_SUFFIX = ".partial"

log = logging.getLogger(__name__)


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [p for p in checkpoint_dir.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(checkpoint_dir: Path, *, on_skip: Callable[[Path, str], None] | None = None) -> Path | None:
    """The newest checkpoint whose files match its manifest; ``on_skip(path, why)`` hears of each newer bad one."""
    return next(valid_checkpoints(checkpoint_dir, on_skip=on_skip), None)


def valid_checkpoints(checkpoint_dir: Path, *,
                      on_skip: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """Checkpoints that verify, newest first; each one that does not is reported to ``on_skip``."""
    for path in reversed(list_checkpoints(checkpoint_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            yield path
        elif on_skip is not None:
            on_skip(path, problem)


def verify_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be resumed (a missing manifest, a missing, resized or altered file), or ``None``."""
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files listed")
    except FileNotFoundError:
        return f"it has no {MANIFEST} (the save or its S3 sync did not finish)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its {MANIFEST} is unreadable ({exc})"
    for name, expected in sorted(files.items()):
        file = path / name
        if not isinstance(expected, dict) or "/" in name or name.startswith("."):
            return f"its {MANIFEST} lists {name!r} strangely"
        try:
            size = file.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != expected.get("size"):
            return f"{name} is {size} bytes, not the {expected.get('size')} written"
        if file_sha256(file) != expected.get("sha256"):
            return f"{name} does not match its sha256 (the file was altered or damaged)"
    return None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(folder: Path) -> None:
    """Fsync every file, then record its size and sha256 in the manifest (written last)."""
    files = {}
    for file in sorted(folder.iterdir()):
        if file.is_file() and file.name != MANIFEST:
            _fsync_file(file)
            files[file.name] = {"size": file.stat().st_size, "sha256": file_sha256(file)}
    write_json_atomic(folder / MANIFEST, {"format": 1, "files": files})
    fsync_dir(folder)


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
    """Write ``checkpoint-<step>`` (complete or not at all) and keep only the newest ``total_limit`` ones."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"{PREFIX}{step:06d}"
    tmp = checkpoint_dir / f".{final.name}{_PARTIAL_SUFFIX}"
    for stale in checkpoint_dir.glob(f".{PREFIX}*{_PARTIAL_SUFFIX}"):  # left by an interrupted save
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_files(tmp, step, trainable=trainable, optimizer=optimizer, lr_scheduler=lr_scheduler,
                     generator=generator, state=state)
        _write_manifest(tmp)
    except BaseException:  # a full disk or Ctrl-C mid-save: the partial folder goes, the last good one stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(checkpoint_dir)
    if total_limit is not None:
        for old in list_checkpoints(checkpoint_dir)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_files(folder: Path, step: int, *, trainable: Mapping[str, Any], optimizer: Any, lr_scheduler: Any,
                 generator: Any, state: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(folder / "trainable.safetensors"))
    opt_tensors, opt_meta = _optimizer_to_files(optimizer)
    save_file(opt_tensors, str(folder / "optimizer.safetensors"))
    rng_tensors, rng_meta = _rng_state(generator)
    save_file(rng_tensors, str(folder / "rng.safetensors"))
    write_json_atomic(folder / "optimizer.json", opt_meta)
    write_json_atomic(folder / "rng.json", rng_meta)
    write_json_atomic(folder / "lr_scheduler.json", lr_scheduler.state_dict())
    write_json_atomic(folder / "state.json", {"step": step, **state})


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
