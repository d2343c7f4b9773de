"""The run folder's state file: which stage finished, with what inputs, outputs and durations.

Each stage records a *fingerprint* of its inputs (a hash of the photos' bytes and the settings). A
stage is reused only when it finished with the very same fingerprint and its outputs are still there;
anything else re-runs it. The file is small JSON, rewritten atomically after every change, so a crash
or Ctrl-C leaves either the previous state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..digests import file_sha256
from ..errors import RunStateError

__all__ = ["RunState", "STATE_FILE", "fingerprint", "files_fingerprint", "file_check", "folder_checks",
           "damaged_files"]

STATE_FILE = "lensa_run.json"
FORMAT = 1

STARTED = "started"
DONE = "done"


def fingerprint(value: Any) -> str:
    """A stable hash of a JSON-able value (dict key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def files_fingerprint(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """(name, sha256) of each file, sorted by name: what a stage's input photos really are."""
    return sorted((p.name, file_sha256(p)) for p in paths)


_STAGE_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": str, "fingerprint": str, "progress": dict, "outputs": dict, "duration_s": (int, float),
}


def _shape_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with a parsed state file's layout (``None`` if nothing): valid JSON can still be junk."""
    if not isinstance(data.get("run", {}), dict):
        return "'run' is not an object"
    for name, record in data["stages"].items():
        if not isinstance(record, dict):
            return f"stage {name!r} is not an object"
        for key, kind in _STAGE_FIELD_TYPES.items():
            if key in record and record[key] is not None and not isinstance(record[key], kind):
                return f"stage {name!r} has a malformed {key!r}"
        outputs = record.get("outputs") or {}
        for key in ("files", "checks"):
            if key in outputs and not isinstance(outputs[key], (list, dict)):
                return f"stage {name!r} has malformed outputs.{key}"
        files = (record.get("progress") or {}).get("files")
        if files is not None and not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
            return f"stage {name!r} has a malformed progress.files"
    return None


def file_check(path: Path) -> list[Any]:
    """``[size, sha256]`` of a stage output, recorded so a rerun can tell an intact file from a damaged one."""
    return [path.stat().st_size, file_sha256(path)]


def folder_checks(folder: Path) -> dict[str, list[Any]]:
    """:func:`file_check` of every file under ``folder``, by path relative to it."""
    return {p.relative_to(folder).as_posix(): file_check(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def damaged_files(folder: Path, checks: Mapping[str, Any]) -> list[str]:
    """The recorded files under ``folder`` that are missing or whose size or sha256 changed, as ``name (why)``."""
    bad = []
    for name, expected in sorted(checks.items()):
        path = folder / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
            continue
        try:
            size, digest = expected
        except (TypeError, ValueError):
            bad.append(f"{name} (no usable record)")
            continue
        if path.stat().st_size != size:
            bad.append(f"{name} ({path.stat().st_size} bytes, {size} written)")
        elif file_sha256(path) != digest:
            bad.append(f"{name} (contents changed)")
    return bad


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunState:
    """The state of one run folder, backed by ``<run_dir>/lensa_run.json``.

    ``stages`` maps a stage name to its record: ``status`` (``started``/``done``), ``fingerprint``,
    ``outputs``, ``duration_s``, timestamps and stage-specific ``progress`` (a SageMaker job name, the
    seed and prompts of a generation, the avatars finished so far). ``run`` holds what
    :meth:`lensa_for_all.Pipeline.resume` needs to rebuild the pipeline.
    """

    def __init__(self, run_dir: Path, data: Mapping[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.data: dict[str, Any] = dict(data or {"format": FORMAT, "created": _now(), "run": {}, "stages": {}})

    @property
    def path(self) -> Path:
        return self.run_dir / STATE_FILE

    @classmethod
    def exists(cls, run_dir: str | os.PathLike[str]) -> bool:
        return (Path(run_dir) / STATE_FILE).is_file()

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str], *, create: bool = False) -> RunState:
        """Read the state of ``run_dir``; with ``create`` a missing file gives a fresh (unsaved) state."""
        run_dir = Path(run_dir)
        path = run_dir / STATE_FILE
        if not path.is_file():
            if create:
                return cls(run_dir)
            raise RunStateError(f"{run_dir} is not a lensa-for-all run folder (no {STATE_FILE}); pass the folder "
                                "a run wrote, or start a new run.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunStateError(f"{path} is unreadable or corrupt ({exc}). Move it away to start the run over; "
                                "finished stages will then run again.") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("stages"), dict):
            raise RunStateError(f"{path} was not written by this version of lensa-for-all; move it away to start "
                                "the run over.")
        problem = _shape_problem(data)
        if problem:
            raise RunStateError(f"{path} is damaged: {problem}. Move it away to start the run over; finished "
                                "stages will then run again.")
        return cls(run_dir, data)

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data["updated"] = _now()
        write_json_atomic(self.path, self.data)

    # -- run description --------------------------------------------------------------------------

    @property
    def run(self) -> dict[str, Any]:
        return self.data.setdefault("run", {})

    def set_run(self, **values: Any) -> None:
        self.run.update(values)
        self.save()

    # -- stages -----------------------------------------------------------------------------------

    def stage(self, name: str) -> dict[str, Any] | None:
        record = self.data["stages"].get(name)
        return dict(record) if isinstance(record, dict) else None

    def is_done(self, name: str, fp: str) -> bool:
        record = self.stage(name)
        return bool(record and record.get("status") == DONE and record.get("fingerprint") == fp)

    def progress(self, name: str, fp: str) -> dict[str, Any]:
        """What an unfinished attempt with the same inputs left behind (empty if none)."""
        record = self.stage(name)
        if record and record.get("fingerprint") == fp:
            return dict(record.get("progress") or {})
        return {}

    def start(self, name: str, fp: str) -> None:
        """Mark ``name`` started; an earlier attempt with the same fingerprint keeps its progress."""
        kept = self.progress(name, fp)
        self.data["stages"][name] = {"status": STARTED, "fingerprint": fp, "started_at": _now(), "progress": kept}
        self.save()

    def update_progress(self, name: str, **values: Any) -> None:
        record = self.data["stages"][name]
        record.setdefault("progress", {}).update(values)
        self.save()

    def finish(self, name: str, outputs: Mapping[str, Any], duration_s: float) -> None:
        record = self.data["stages"][name]
        record.update(status=DONE, outputs=dict(outputs), duration_s=round(float(duration_s), 3),
                      finished_at=_now())
        self.save()

    def durations(self, names: Iterable[str]) -> dict[str, float]:
        """Seconds each named stage took when it last ran (0 for a stage with no record)."""
        return {name: float((self.stage(name) or {}).get("duration_s", 0.0)) for name in names}

    def forget(self, name: str) -> None:
        """Drop a stage's record (its inputs changed; it will run again)."""
        if self.data["stages"].pop(name, None) is not None:
            self.save()
