"""Does every photo show the same person? The likeness part of the photo check (needs ``[likeness]``).

Each photo's surest face is embedded (:mod:`lensa_for_all.likeness`) and compared with the faces of
the other photos. A photo whose median likeness to the others is under 0.5 (dlib's same-person
threshold) is flagged: usually a friend in the frame or the wrong person. It takes at least three
photos with a face to tell which one is the odd one out.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["IdentityCheck", "MIN_FACES_TO_COMPARE", "check_identity"]

MIN_FACES_TO_COMPARE = 3
"""With two faces a mismatch cannot say which photo is the wrong one."""

MATCH_THRESHOLD = 0.5
"""Median likeness to the other photos under which a photo is flagged (dlib's 0.6 distance)."""


@attrs.frozen
class IdentityCheck:
    """The result: per photo its median likeness to the others (``None`` without a face), dlib's face
    count, the photos that do not match and the set's consistency (median pairwise likeness)."""

    likeness: dict[Path, float | None]
    faces: dict[Path, int]
    mismatched: tuple[Path, ...]
    consistency: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"consistency": None if self.consistency is None else round(self.consistency, 3),
                "mismatched": [str(p) for p in self.mismatched],
                "several_faces": [str(p) for p, n in self.faces.items() if n > 1],
                "no_face": [str(p) for p, n in self.faces.items() if n == 0]}


def check_identity(paths: Sequence[Path], identity: Any | None = None) -> IdentityCheck:
    """Embed each photo's faces and compare them; ``identity`` is a :class:`~lensa_for_all.likeness.FaceIdentity`."""
    from ..likeness import FaceIdentity, likeness_from_distance

    identity = identity or FaceIdentity()
    embedded = {}
    counts: dict[Path, int] = {}
    for path in paths:
        faces = _faces(identity, path)
        counts[path] = len(faces)
        if faces:
            embedded[path] = faces[0]
    likeness: dict[Path, float | None] = {p: None for p in paths}
    pairs: list[float] = []
    names = list(embedded)
    for i, a in enumerate(names):
        others = [likeness_from_distance(embedded[a].distance(embedded[b])) for b in names if b != a]
        pairs += others[i:]  # each pair once: the ones after ``a``
        if others:
            likeness[a] = statistics.median(others)
    enough = len(embedded) >= MIN_FACES_TO_COMPARE
    mismatched = tuple(p for p in names if enough and (likeness[p] or 0.0) < MATCH_THRESHOLD)
    return IdentityCheck(likeness, counts, mismatched, statistics.median(pairs) if pairs else None)


def _faces(identity: Any, path: Path) -> list[Any]:
    """The photo's faces, decoded upright at the photo check's analysis size (a 24 MP JPEG whole is slow)."""
    from .photoset import ANALYSIS_SIDE
    from .reading import open_photo

    opened = open_photo(path)
    try:
        image = opened.decode(ANALYSIS_SIDE, gray=False)
        try:
            return list(identity.faces(image))
        finally:
            image.close()
    finally:
        opened.close()
