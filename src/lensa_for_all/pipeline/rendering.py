"""The generate stage's loop: render a run's avatars one by one, so an interrupted generation loses none.

The seed and the prompts are recorded in the run state before the first image; each avatar is recorded
(name, size, sha256) right after its PNG is written; PNGs an interrupted run wrote but had not recorded
are adopted on the next attempt. Image ``i`` always has seed ``seed + i``, so a resumed pack is the pack
an uninterrupted run would have rendered.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .outputs import intact_avatars
from .prompt_source import prompt_from_dict
from .request import MAX_SEED
from .state import file_check

if TYPE_CHECKING:
    from ..generation.pack import PackWriter
    from ..prompts import Prompt
    from .progress import RunProgress
    from .request import RunRequest
    from .state import RunState

__all__ = ["render_avatars", "missing_runs"]

STAGE = "generate"


class _Finished:
    """The avatars finished so far, by image index, with their ``[size, sha256]``; saved to the state on demand."""

    def __init__(self, state: RunState, files: dict[int, str], checks: dict[str, Any]) -> None:
        self.state = state
        self.files = files
        self.checks = checks

    def add(self, index: int, path: Path) -> None:
        self.files[index] = path.name
        self.checks[path.name] = file_check(path)

    def save(self, **extra: Any) -> None:
        self.state.update_progress(STAGE, **extra, files={str(k): v for k, v in self.files.items()},
                                   checks={v: self.checks[v] for v in self.files.values() if v in self.checks})


def render_avatars(model: Any, request: RunRequest, state: RunState, fp: str, out: Path, progress: RunProgress,
                   choose_prompts: Callable[[int], list[Prompt]]) -> dict[str, Any]:
    """Render ``request.num_images`` avatars of ``model`` into ``out``, keeping those an earlier attempt with
    the same inputs (``fp``) finished; return the stage's outputs. ``choose_prompts(seed)`` picks new prompts."""
    from ..generation.pack import PackWriter

    earlier = state.progress(STAGE, fp)
    seed = _seed(earlier, request.seed)
    prompts = [prompt_from_dict(d) for d in earlier["prompts"]] if earlier.get("prompts") else choose_prompts(seed)
    checks: dict[str, Any] = dict(earlier.get("checks") or {})
    finished = _Finished(state, intact_avatars(out, earlier.get("files") or {}, checks), checks)
    writer = PackWriter(out)  # built once the damaged avatars are gone: it names new files around those present
    _adopt_unrecorded(finished, writer, seed, request.num_images)
    finished.save(seed=seed, prompts=[p.to_dict() for p in prompts])
    if finished.files:
        progress.message(f"Keeping the {len(finished.files)} avatars an earlier run finished.")
    progress.stage_progress(STAGE, len(finished.files), request.num_images)
    for start, stop in missing_runs(request.num_images, finished.files):
        run_prompts = [prompts[i % len(prompts)] for i in range(start, stop)]
        avatars = model.iter_generate(run_prompts, stop - start, seed=(seed + start) % MAX_SEED,
                                      batch_size=request.batch_size, **request.render_options)
        for avatar in avatars:
            # batches group jobs by their settings, so avatars may finish out of order; image i has seed+i
            index = (avatar.seed - seed) % MAX_SEED
            finished.add(index, writer.add(avatar, index))
            finished.save()
            progress.stage_progress(STAGE, len(finished.files), request.num_images)
    return _finish_pack(writer, out, finished, seed, request.num_images)


def _seed(earlier: Mapping[str, Any], requested: int | None) -> int:
    """The seed an earlier attempt rendered with, else the requested one, else a random one."""
    if earlier.get("seed") is not None:
        return int(earlier["seed"])
    return requested if requested is not None else secrets.randbelow(2**31)


def _adopt_unrecorded(finished: _Finished, writer: PackWriter, seed: int, num_images: int) -> None:
    """Take in the PNGs an interrupted attempt wrote but had not recorded yet (found by index and seed)."""
    for index in range(num_images):
        adopted = writer.adopt(index, (seed + index) % MAX_SEED) if index not in finished.files else None
        if adopted is not None:
            finished.add(index, adopted)


def _finish_pack(writer: PackWriter, out: Path, finished: _Finished, seed: int, num_images: int) -> dict[str, Any]:
    """Write the pack's index and contact sheet; the generate stage's outputs."""
    from ..generation import AvatarPack
    from ..generation.pack import Avatar

    files = [finished.files[i] for i in range(num_images)]
    sheet = writer.finish(AvatarPack([Avatar.from_png(out / f) for f in files]))
    return {"out_dir": str(out.resolve()), "files": files, "contact_sheet": sheet.name if sheet else None,
            "seed": seed, "checks": {f: finished.checks[f] for f in files if f in finished.checks}}


def missing_runs(n: int, done: Mapping[int, str]) -> Iterator[tuple[int, int]]:
    """Contiguous [start, stop) ranges of image indices not finished yet."""
    start: int | None = None
    for i in range(n + 1):
        missing = i < n and i not in done
        if missing and start is None:
            start = i
        elif not missing and start is not None:
            yield start, i
            start = None
