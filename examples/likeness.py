"""Face likeness: score photos against a subject, spot the odd photo out, keep the best avatars.

Needs the likeness extra (``pip install "lensa-for-all[likeness]"``) and, for its sample portraits,
scikit-image and matplotlib (both in the dev extra): the public-domain NASA portrait of Eileen Collins
and the U.S. Navy portrait of Grace Hopper. With your own photos use:

    refs = identity.references(sorted(Path("photos/me").glob("*.jpg")))
    print(identity.score("avatars/000-anime-1234.png", refs))
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from lensa_for_all.likeness import INSTALL_HINT, FaceIdentity, is_available
from lensa_for_all.photos import PhotoSet


def _portrait(package: str, relative: str) -> Image.Image:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"needs {package}"
    with Image.open(Path(next(iter(spec.submodule_search_locations))) / relative) as im:
        return im.convert("RGB")


def _shot(image: Image.Image, turn: float, mirror: bool, k: int = 0) -> Image.Image:
    """Another 'photo' of the same face: mirrored or not, turned a little, sized and placed anew on its own
    background colour."""
    shot = ImageOps.mirror(image) if mirror else image
    canvas = Image.new("RGB", (560, 640), ((60 + 70 * k) % 256, (200 - 45 * k) % 256, (90 + 110 * k) % 256))
    side = 420 + 30 * (k % 3)
    canvas.paste(shot.rotate(turn, resample=Image.Resampling.BICUBIC).resize((side, side * 7 // 6)),
                 (10 + 25 * k, 5 + 15 * (k % 2)))
    return canvas


def main() -> None:
    if not is_available():
        print(f"Face likeness is not installed: {INSTALL_HINT}")
        return
    collins = _portrait("skimage", "data/astronaut.png")
    hopper = _portrait("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")

    identity = FaceIdentity()
    refs = identity.references([_shot(collins, t, m) for t, m in ((0, False), (5, True), (-6, False))])
    for name, image in (("Collins, another shot", _shot(collins, 3, True)), ("Hopper", _shot(hopper, 0, False))):
        result = identity.score(image, refs)
        print(f"{name}: likeness {result.score:.2f} (same person: {result.same_person}), face at {result.box}")

    with tempfile.TemporaryDirectory() as tmp:  # the photo check names the photo of someone else
        folder = Path(tmp) / "me"
        folder.mkdir()
        for i, (t, m) in enumerate(((0, False), (4, True), (-5, False), (7, True))):
            _shot(collins, t, m, i).save(folder / f"collins-{i}.jpg", quality=90)
        _shot(hopper, 2, False, 4).save(folder / "party-friend.jpg", quality=90)
        ps = PhotoSet.from_folder(folder, subject_class="woman")
        print("set warnings:", ps.warnings())
        print("consistency:", ps.report().to_dict()["identity"]["consistency"])


if __name__ == "__main__":
    main()
