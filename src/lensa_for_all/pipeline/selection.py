"""``keep_best`` for a run: the avatars most like the subject, picked from more candidates than are kept.

The generate stage renders ``num_images`` candidates into ``<run_dir>/candidates`` (resumable like any
pack), scores each with face likeness (:mod:`lensa_for_all.likeness`, the ``[likeness]`` extra) against
the subject's photos (the accepted originals), and writes the ``keep_best`` best into the avatar folder,
each with its score in ``avatars.json``, with a contact sheet sorted by likeness. Picking again (a kept
avatar was deleted) renders nothing: the candidates are still in the run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .outputs import remove_our_avatars
from .state import file_check

if TYPE_CHECKING:
    from .state import RunState

__all__ = ["keep_most_alike"]

STAGE = "generate"


def keep_most_alike(candidates: Mapping[str, Any], keep: int, references: Any, out: Path, state: RunState,
                    fp: str) -> dict[str, Any]:
    """Score the rendered ``candidates`` (the outputs of their rendering) and write the ``keep`` best to ``out``;
    return the generate stage's outputs (the kept avatars, their scores, and where the candidates are)."""
    from ..generation import AvatarPack
    from ..generation.best import pick_best, reference_set
    from ..generation.pack import Avatar, PackWriter
    from ..likeness import FaceIdentity

    folder = Path(candidates["out_dir"])
    identity = FaceIdentity()
    kept = pick_best([Avatar.from_png(folder / f) for f in candidates["files"]], keep,
                     reference_set(references, identity), identity)
    remove_our_avatars(out, state.progress(STAGE, fp).get("kept") or [])  # an earlier pick, one of them damaged
    writer = PackWriter(out)  # after the old picks are gone: it names new files around those present
    files = [writer.add(avatar, i).name for i, avatar in enumerate(kept)]
    state.update_progress(STAGE, kept=files)
    sheet = writer.finish(AvatarPack(kept), sort="likeness")
    return {"out_dir": str(out.resolve()), "files": files, "contact_sheet": sheet.name if sheet else None,
            "seed": candidates["seed"], "checks": {f: file_check(out / f) for f in files},
            "likeness": {f: a.likeness for f, a in zip(files, kept, strict=True)},
            "candidates": {"dir": str(folder.resolve()), "files": list(candidates["files"])}}

