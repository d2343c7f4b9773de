"""Keeping the avatars that look most like the subject: ``AvatarModel.generate(..., keep_best=N)``.

More candidates are rendered than kept; each is scored with face likeness against the subject's photos
(:mod:`lensa_for_all.likeness`, the ``[likeness]`` extra) and the ``N`` best are kept, each with its score.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .pack import Avatar

__all__ = ["CANDIDATES_PER_KEPT", "candidate_count", "pick_best", "reference_set"]

CANDIDATES_PER_KEPT = 2
"""Candidates rendered per avatar kept when ``num_images`` is not given."""


def candidate_count(keep_best: int, num_images: int | None) -> int:
    """How many candidates to render: ``num_images`` (at least ``keep_best``) or twice ``keep_best``."""
    if keep_best < 1:
        raise ConfigError(f"keep_best must be at least 1, not {keep_best}.")
    if num_images is None:
        return CANDIDATES_PER_KEPT * keep_best
    if num_images < keep_best:
        raise ConfigError(f"keep_best={keep_best} keeps the best of num_images={num_images} candidates; ask for at "
                          f"least {keep_best} images (2-3x as many picks better ones).")
    return num_images


def reference_set(references: Any, identity: Any) -> Any:
    """The subject's faces from a :class:`~lensa_for_all.likeness.ReferenceSet`, a folder, or images/paths."""
    from pathlib import Path

    from ..likeness import ReferenceSet

    if references is None:
        raise ConfigError("keep_best needs references=: the subject's photos (a folder, paths or images) to score "
                          "likeness against.")
    if isinstance(references, ReferenceSet):
        return references
    if isinstance(references, (str, os.PathLike)) and Path(references).is_dir():
        from ..photos.photoset import PhotoSet

        photos = PhotoSet.from_folder(references, min_photos=1, likeness=False).photos
        references = [p.source for p in photos]
    elif isinstance(references, (str, os.PathLike)):
        references = [references]
    refs = identity.references(list(references))
    if not len(refs):
        raise ConfigError("None of the reference photos shows a face dlib can find; pass photos where the subject's "
                          "face is visible.")
    return refs


def pick_best(avatars: Sequence[Avatar], keep: int, references: Any, identity: Any) -> list[Avatar]:
    """Score every avatar (``likeness`` set on each) and return the ``keep`` best, in their original order."""
    import attrs

    from ..likeness import score_face

    scored = []
    for avatar in avatars:
        faces = identity.faces(avatar.image)
        score = score_face(faces[0], references, faces=len(faces)).score if faces else 0.0
        scored.append(attrs.evolve(avatar, likeness=round(score, 4)))
    ranked = sorted(range(len(scored)), key=lambda i: (-(scored[i].likeness or 0.0), i))
    kept = sorted(ranked[:keep])
    return [scored[i] for i in kept]
