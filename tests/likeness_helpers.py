"""Real portraits of three different people, from packages the dev extra installs (never downloaded here).

- ``astronaut``: Eileen Collins, NASA portrait, public domain; scikit-image's ``data/astronaut.png``.
- ``hopper``: Grace Hopper, U.S. Navy photograph, public domain; matplotlib's ``sample_data/grace_hopper.jpg``.
- ``coelho``: Luis Pedro Coelho, mahotas' author; ``mahotas/demos/data/luispedro.jpg``, shipped in the
  mahotas wheel under its MIT licence.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

PORTRAITS = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "coelho": ("mahotas", "demos/data/luispedro.jpg"),
}


def needs_likeness() -> None:
    """Skip unless the ``[likeness]`` extra and the portrait packages are installed (the dev extra has them)."""
    from lensa_for_all.likeness import is_available

    if not is_available():
        pytest.skip("needs the likeness extra: pip install 'lensa-for-all[likeness]'")
    for package, _ in PORTRAITS.values():
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"needs {package} for its portrait (in the dev extra)")


def portrait_path(name: str) -> Path:
    package, relative = PORTRAITS[name]
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / relative


def portrait(name: str) -> Any:
    from PIL import Image

    with Image.open(portrait_path(name)) as im:
        return im.convert("RGB")


def augmented(image: Any, seed: int, *, size: tuple[int, int] = (560, 640)) -> Any:
    """The photo as another shot of it: mirrored or not, turned a few degrees, scaled, relit, on a new
    background at a random place."""
    import numpy as np
    from PIL import Image, ImageEnhance

    rng = np.random.default_rng(seed)
    piece = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image
    piece = piece.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BICUBIC, expand=False)
    side = int(min(size) * rng.uniform(0.75, 0.95))
    piece = piece.resize((side, round(side * piece.height / piece.width)), Image.Resampling.LANCZOS)
    piece = ImageEnhance.Brightness(piece).enhance(float(rng.uniform(0.85, 1.15)))
    colour = tuple(int(c) for c in rng.integers(40, 220, 3))
    canvas = Image.new("RGB", size, colour)
    x = int(rng.integers(0, max(1, size[0] - piece.width + 1)))
    y = int(rng.integers(0, max(1, size[1] - piece.height + 1)))
    canvas.paste(piece, (x, y))
    return canvas


def write_set(folder: Path, people: list[str], *, seed: int = 0) -> list[Path]:
    """One JPEG per entry of ``people`` (an augmented shot of that portrait), named ``NN-<person>.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(people):
        path = folder / f"{i:02d}-{name}.jpg"
        augmented(portrait(name), seed + i).save(path, quality=90)
        paths.append(path)
    return paths


def face_square(name: str, seed: int, side: int) -> Any:
    """A ``side`` px square around the face of an augmented shot: what a training image at that resolution
    shows (the photo check's face crop), small enough for the tiny 64 px model."""
    from PIL import Image

    from lensa_for_all.likeness import FaceIdentity

    shot = augmented(portrait(name), seed)
    face = FaceIdentity().embed(shot)
    assert face is not None, name
    half = max(face.box.width, face.box.height) * 0.9
    cx, cy = face.box.centre
    square = shot.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    return square.resize((side, side), Image.Resampling.LANCZOS)


PEOPLE = ("astronaut", "hopper", "coelho")


class ScriptedRunner:
    """A 'model' whose image for seed s is a shot of PEOPLE[s % 3]: a third of the candidates are the subject
    (seeds 0, 3, ...). ``rendered`` lists the seeds it rendered."""

    name = "scripted"
    default_size = (256, 256)
    is_lora = False
    tokenizer = None

    def __init__(self, batch_size: int = 2) -> None:
        self.rendered: list[int] = []
        self.batch_size = batch_size

    def auto_batch_size(self, width: int, height: int) -> int:
        return self.batch_size

    def run(self, jobs: Sequence[Any], *, callback_on_step_end: Any = None) -> list[Any]:
        self.rendered += [job.seed for job in jobs]
        return [augmented(portrait(PEOPLE[job.seed % 3]), 100 + job.seed, size=(448, 512)) for job in jobs]
