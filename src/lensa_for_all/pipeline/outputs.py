"""What each stage leaves in the run folder, and whether it is still intact for a rerun to reuse.

A stage is reused only when its outputs are the ones it recorded (sizes and sha256 in the state);
anything missing or changed is named, so the user reads why a stage runs again. Only files a stage
recorded, by name, are ever deleted.

Run folder layout::

    run_dir/lensa_run.json   state: finished stages, their input fingerprints, outputs, durations
    run_dir/qc_report.json   the photo check
    run_dir/photos/          prepared square PNGs + manifest.json
    run_dir/model/           the trained model (LoRA or full); run_dir/model.work: checkpoints, log
    run_dir/candidates/      with keep_best: every rendered candidate (lensa_for_all.pipeline.selection)
    out_dir/                 the avatars, avatars.json and contact_sheet.jpg (default run_dir/avatars)
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RunStateError
from .state import damaged_files, files_fingerprint, fingerprint, folder_checks

if TYPE_CHECKING:
    from ..training.backend import TrainingResult

__all__ = [
    "PHOTOS_DIR", "MODEL_DIR", "AVATARS_DIR", "QC_REPORT", "prepared_fingerprint", "damaged_prepared",
    "model_problems", "model_source", "training_outputs", "discard_model", "damaged_avatars", "intact_avatars",
    "remove_avatars", "remove_our_avatars", "CANDIDATES_DIR", "remove_candidates",
]

PHOTOS_DIR = "photos"
MODEL_DIR = "model"
AVATARS_DIR = "avatars"
CANDIDATES_DIR = "candidates"
QC_REPORT = "qc_report.json"

_OUR_AVATAR = re.compile(r"[\w.+-]+\.png")  # the only names a stage deletes: PNGs it wrote itself


# -- photos ----------------------------------------------------------------------------------------


def prepared_fingerprint(folder: Path) -> str:
    """What training sees: the prepared PNGs' bytes (manifest names and hashes) and their settings."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return fingerprint({"settings": manifest.get("settings"), "subject_class": manifest.get("subject_class"),
                        "photos": sorted((e["file"], e.get("output_sha256")) for e in manifest.get("photos", []))})


def damaged_prepared(folder: Path) -> list[str]:
    """Prepared photos that are missing or differ from their manifest (``["manifest.json"]`` without one)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        entries = [(e["file"], e.get("output_sha256")) for e in manifest["photos"]]
    except (OSError, ValueError, KeyError, TypeError):
        return ["manifest.json"]
    bad = []
    for name, digest in entries:
        path = folder / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
        elif digest and files_fingerprint([path])[0][1] != digest:
            bad.append(f"{name} (contents changed)")
    return bad


# -- model -----------------------------------------------------------------------------------------


def training_outputs(result: TrainingResult, model_dir: Path) -> dict[str, Any]:
    """What the train stage records: where the model is (folder, relative to the run folder, or S3) and its checks."""
    local = result.output_dir is not None
    return {"dir": MODEL_DIR if local else None, "checks": folder_checks(model_dir) if local else {},
            "artifact_uri": result.artifact_uri, "job_name": result.job_name, "cost_usd": result.cost_usd,
            "backend": result.backend, "metrics": dict(result.metrics),
            "log": str(result.log_path) if result.log_path else None}


def model_problems(run_dir: Path, outputs: Mapping[str, Any]) -> list[str] | None:
    """Recorded model files that are missing or changed; ``None`` when there is no model at all to reuse."""
    checks = outputs.get("checks")
    if outputs.get("dir") and isinstance(checks, dict) and checks:
        damaged = damaged_files(run_dir / outputs["dir"], checks)
        if damaged:
            return damaged
    return [] if _model_present(run_dir, outputs) else None


def _model_present(run_dir: Path, outputs: Mapping[str, Any]) -> bool:
    if outputs.get("dir"):
        folder = run_dir / outputs["dir"]
        return folder.is_dir() and any(folder.iterdir())
    return bool(outputs.get("artifact_uri"))


def model_source(run_dir: Path, outputs: Mapping[str, Any]) -> str:
    """What :meth:`AvatarModel.load` reads: the model folder in the run folder, or the job's ``s3://`` tarball."""
    if outputs.get("dir"):
        return str(run_dir / outputs["dir"])
    uri = outputs.get("artifact_uri")
    if not uri:
        raise RunStateError(f"The training stage in {run_dir} recorded no model; run again to retrain.")
    return str(uri)


def _remove_folders(run_dir: Path, *names: str) -> None:
    """Remove the run folder's own sub-folders ``names`` (never what a symlink points to)."""
    for name in names:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)


def discard_model(run_dir: Path) -> None:
    """Remove a stale model and its checkpoints (both inside the run folder) so they are not resumed."""
    _remove_folders(run_dir, MODEL_DIR, MODEL_DIR + ".work")


def remove_candidates(run_dir: Path) -> None:
    """Remove the ``keep_best`` candidates of a generation whose inputs changed."""
    _remove_folders(run_dir, CANDIDATES_DIR)


# -- avatars ---------------------------------------------------------------------------------------


def damaged_avatars(out: Path, record: Mapping[str, Any]) -> list[str]:
    """Avatars of a finished generation that are missing or changed since they were recorded."""
    outputs = record.get("outputs") or {}
    files = [f for f in outputs.get("files") or [] if isinstance(f, str)]
    checks = outputs.get("checks") or {}
    bad = [f"{f} (missing)" for f in files if not (out / f).is_file()]
    present = {f: checks[f] for f in files if f in checks and (out / f).is_file()}
    return bad + damaged_files(out, present)


def intact_avatars(out: Path, files: Mapping[str, str], checks: Mapping[str, Any]) -> dict[int, str]:
    """The recorded avatars that are still intact, by index; damaged ones are deleted (they are ours, by name)."""
    intact: dict[int, str] = {}
    for key, name in files.items():
        path = out / name
        if not path.is_file():
            continue
        if name in checks and damaged_files(out, {name: checks[name]}):
            if _OUR_AVATAR.fullmatch(name):
                path.unlink()
            continue
        intact[int(key)] = name
    return intact


def remove_avatars(record: Mapping[str, Any], out: Path) -> None:
    """Delete the avatars a stale generation wrote into ``out`` (only files it recorded, by name)."""
    outputs = record.get("outputs") or {}
    recorded_dir = outputs.get("out_dir")
    if recorded_dir and Path(recorded_dir) != out.resolve():
        return  # another folder: the user's earlier pack stays where it is
    remove_our_avatars(out, set(outputs.get("files") or []) |
                       set((record.get("progress") or {}).get("files", {}).values()))


def remove_our_avatars(out: Path, names: Iterable[Any]) -> None:
    """Delete the avatars named in ``names`` from ``out``: only PNG names a stage recorded writing."""
    for name in names:
        if isinstance(name, str) and _OUR_AVATAR.fullmatch(name):
            (out / name).unlink(missing_ok=True)
