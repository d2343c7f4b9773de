"""OpenedPhoto.decode_region: a JPEG decoded only down to the rows a crop needs gives the same square."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lensa_for_all.photos.reading import open_photo
from lensa_for_all.testing.photos import make_photos

SIDE = 96


def _square(img: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    out = img.resize((SIDE, SIDE), Image.Resampling.LANCZOS, box=box,
                     reducing_gap=None if box[2] - box[0] < 3 * SIDE else 2.0)
    return np.asarray(out, dtype=np.int16)


def _full_decode_square(path: Path, crop: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The plain way: decode the whole photo at the same DCT scale, map the crop, resample."""
    opened = open_photo(path)
    w, h = opened.size
    img = opened.decode(math.ceil(SIDE * min(w, h) / (crop[2] - crop[0])))
    fx, fy = img.width / w, img.height / h
    return _square(img, (crop[0] * fx, crop[1] * fy, crop[2] * fx, crop[3] * fy)), img.size


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Image.Image:
    # Odd sizes, so DCT-scaled sizes are rounded up and the stored height is not a whole number of blocks.
    path = make_photos(tmp_path_factory.mktemp("src"), 1, size=(643, 851), seed=3)[0]
    with Image.open(path) as im:
        return im.convert("RGB")


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_region_decode_gives_the_full_decodes_square(picture: Image.Image, tmp_path: Path, orientation: int,
                                                     progressive: bool) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "p.jpg"
    picture.save(path, quality=90, progressive=progressive, exif=exif.tobytes())
    w, h = open_photo(path).size
    s = min(w, h) // 2
    crops = {"top-left": (0, 0, s, s), "bottom-right": (w - s, h - s, w, h), "middle": (w // 3, h // 3, w // 3 + s, h // 3 + s)}
    cut = 0
    for name, crop in crops.items():
        img, box = open_photo(path).decode_region(crop, SIDE)
        assert 0 <= box[0] < box[2] <= img.width and 0 <= box[1] < box[3] <= img.height, name
        ours = _square(img, box)
        plain, full_size = _full_decode_square(path, crop)
        diff = np.abs(ours - plain)
        # Same decoded pixels; only Pillow's fixed-point resampling may round a level or so differently
        # when the part is narrower than the whole (it can pick the other pass order).
        assert diff.max() <= 8 and diff.mean() < 0.5, (name, diff.max(), diff.mean())
        if orientation in (1, 2):
            assert diff.max() == 0, name
        cut += img.width * img.height < full_size[0] * full_size[1]
    # The crop nearest the stored top is decoded from fewer rows than the whole photo.
    assert cut >= 1


def test_region_decode_of_other_formats_is_the_whole_image(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(path)
    img, box = open_photo(path).decode_region((50, 20, 200, 170), 64)
    assert img.size == (300, 200) and box == (50.0, 20.0, 200.0, 170.0)
