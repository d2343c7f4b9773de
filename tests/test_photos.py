"""PhotoSet against a hostile corpus: every format, mode and rejection, and sources left untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lensa_for_all.errors import PhotoSetError, TooFewPhotosError
from lensa_for_all.photos import PhotoSet, QCReport
from lensa_for_all.photos.reading import UnreadablePhoto, open_photo
from lensa_for_all.testing.photos import make_photos, subject_image
from photos_helpers import ASTRONAUT_FACE, build_corpus, png_header_only, tree_hashes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict[str, str]]:
    base = tmp_path_factory.mktemp("corpus")
    root = base / "photos"
    expect = build_corpus(root, base)
    return root, expect, tree_hashes(root)


@pytest.fixture(scope="module")
def checked(corpus: tuple[Path, dict[str, str], dict[str, str]], tmp_path_factory: pytest.TempPathFactory):
    root, _, _ = corpus
    ps = PhotoSet.from_folder(root, subject_class="person")
    out = ps.prepare(tmp_path_factory.mktemp("prepared") / "run" / "photos", resolution=256)
    return ps, out


def test_every_file_gets_its_expected_outcome(corpus, checked) -> None:
    root, expect, _ = corpus
    ps, _ = checked
    got = {p.source.name: "accepted" for p in ps.photos}
    got |= {r.path.name: r.code for r in ps.rejected}
    got |= {p.name: "skipped" for p in ps.skipped}
    assert got == expect
    for r in ps.rejected:
        assert r.reason.endswith((".", ")")) and len(r.reason) > 15, r


def test_sources_are_byte_identical_and_nothing_added(corpus, checked) -> None:
    root, _, before = corpus
    assert tree_hashes(root) == before


def test_duplicates_name_the_kept_photo(checked) -> None:
    ps, _ = checked
    by_code = {r.code: r for r in ps.rejected}
    assert by_code["duplicate"].duplicate_of is not None and by_code["duplicate"].duplicate_of.name == "a_good.jpg"
    assert by_code["near_duplicate"].duplicate_of.name == "a_good.jpg"
    assert "a_good.jpg" in by_code["near_duplicate"].reason


def test_modes_and_orientation(checked) -> None:
    ps, _ = checked
    photos = {p.source.name: p for p in ps.photos}
    assert photos["m_rotated.jpg"].size == (480, 600)
    assert photos["c_webp_named_jpg.jpg"].format == "webp"
    assert photos["g_phone.heic"].format == "heif"
    # Haar may add a false positive on the shuttle (l_gray); every photo has its face found.
    assert all(p.faces in (1, 2) for p in photos.values()), {n: p.faces for n, p in photos.items()}
    assert sum(p.faces == 1 for p in photos.values()) >= 11


def test_prepared_pngs_and_manifest(checked) -> None:
    ps, out = checked
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["photos"]) == len(ps.photos) == 13
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(e["file"] for e in manifest["photos"])
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    for entry in manifest["photos"]:
        with Image.open(out / entry["file"]) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (256, 256)
            assert "exif" not in im.info


def test_gif_uses_first_frame_and_alpha_is_composited_on_grey(checked) -> None:
    ps, out = checked
    manifest = json.loads((out / "manifest.json").read_text())
    files = {Path(e["source"]).name: out / e["file"] for e in manifest["photos"]}
    gif = np.asarray(Image.open(files["f_anim.gif"]), dtype=np.int16)
    assert not (gif[..., 0] > 200).all()  # the second frame is solid red; the first is the photo
    opened = open_photo(next(p.source for p in ps.photos if p.source.name == "j_rgba.png"))
    top = np.asarray(opened.decode())[:30]
    assert np.abs(top.astype(int) - 128).max() <= 1  # transparent band -> neutral grey


def test_sixteen_bit_is_scaled_not_clipped(checked) -> None:
    ps, _ = checked
    photo = next(p for p in ps.photos if p.source.name == "k_gray16.png")
    arr = np.asarray(open_photo(photo.source).decode())
    assert arr.dtype == np.uint8 and arr.shape[2] == 3
    assert 40 < arr.mean() < 215 and arr.std() > 20  # clipping 16-bit at 255 would give nearly all white


def test_exif_rotation_puts_pixels_upright(tmp_path: Path) -> None:
    im = Image.new("RGB", (300, 200), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 60, 60))  # red mark in the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    p = tmp_path / "r.jpg"
    im.save(p, quality=95, exif=exif.tobytes())
    opened = open_photo(p)
    assert opened.size == (200, 300)
    up = np.asarray(opened.decode())
    assert up.shape == (300, 200, 3)
    assert up[10, 190, 0] > 200 and up[10, 190, 2] < 60  # now top-right
    assert up[10, 10, 0] < 60


def test_bomb_is_refused_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    def no_decode(self):  # type: ignore[no-untyped-def]
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_only(40_000, 40_000))
    with pytest.raises(UnreadablePhoto) as info:
        open_photo(p)
    assert info.value.code == "bomb" and "decompression bomb" in info.value.reason
    # Past Pillow's own limit, its DecompressionBombError is a rejection too.
    with pytest.raises(UnreadablePhoto) as info:
        open_photo(p, max_pixels=10**12)
    assert info.value.code == "bomb"


def test_max_pixels_applies_to_real_images(tmp_path: Path) -> None:
    files = make_photos(tmp_path / "p", 4, size=(320, 400), seed=3)
    with pytest.raises(TooFewPhotosError) as info:
        PhotoSet.from_folder(tmp_path / "p", max_pixels=100_000)
    assert str(info.value).count("decompression bomb") == len(files)


def test_too_few_photos_lists_every_reason(tmp_path: Path) -> None:
    make_photos(tmp_path / "p", 2, size=(320, 400), seed=1)
    (tmp_path / "p" / "readme.txt").write_text("hello")
    (tmp_path / "p" / "empty.png").write_bytes(b"")
    with pytest.raises(TooFewPhotosError) as info:
        PhotoSet.from_folder(tmp_path / "p", min_photos=4)
    msg = str(info.value)
    assert "Only 2 usable photos" in msg and "at least 4" in msg
    assert "readme.txt: This is a text file" in msg and "empty.png: The file is empty" in msg
    assert isinstance(info.value, PhotoSetError)
    report = info.value.report
    assert isinstance(report, QCReport) and not report.usable and len(report.rejected) == 2


def test_missing_folder_is_a_photoset_error(tmp_path: Path) -> None:
    with pytest.raises(PhotoSetError, match="does not exist"):
        PhotoSet.from_folder(tmp_path / "nope")


def test_more_than_twenty_is_a_warning(tmp_path: Path) -> None:
    files = make_photos(tmp_path / "p", 21, size=(256, 320), seed=5)
    assert [f.read_bytes() for f in make_photos(tmp_path / "again", 2, size=(256, 320), seed=5)] == \
        [f.read_bytes() for f in files[:2]]  # deterministic
    ps = PhotoSet.from_folder(tmp_path / "p")
    assert len(ps.photos) == 21 and ps.rejected == []  # 21 distinct shots: no near-duplicates
    assert any("more than 20" in w for w in ps.report().warnings)


def test_astronaut_face_crop_is_centred_on_her_face(tmp_path: Path) -> None:
    # The portrait pasted off-centre on a wide canvas: a centre crop would miss her face.
    canvas = Image.new("RGB", (1400, 700), (90, 110, 100))
    canvas.paste(subject_image("person"), (850, 100))
    (tmp_path / "in").mkdir()
    canvas.save(tmp_path / "in" / "wide.png")
    subject_image("person").save(tmp_path / "in" / "astronaut.png")
    ps = PhotoSet.from_files([tmp_path / "in" / "wide.png", tmp_path / "in" / "astronaut.png"], min_photos=2)
    fl, ft, fr, fb = ASTRONAUT_FACE
    for photo, (dx, dy) in zip(ps.photos, [(850, 100), (0, 0)], strict=True):
        assert photo.faces == 1
        face = photo.face_box
        assert face is not None
        inter_w = min(face.right, fr + dx) - max(face.left, fl + dx)
        inter_h = min(face.bottom, fb + dy) - max(face.top, ft + dy)
        assert inter_w > 0.7 * (fr - fl) and inter_h > 0.6 * (fb - ft)
        crop = photo.crop_box
        assert crop.width == crop.height
        cx = crop.left + crop.width / 2
        assert abs(cx - ((fl + fr) / 2 + dx)) <= 0.08 * crop.width or crop.width == min(photo.size)
        assert crop.left <= fl + dx and crop.right >= fr + dx and crop.top <= ft + dy and crop.bottom >= fb + dy
    wide = ps.photos[0].crop_box
    assert abs(wide.left + wide.width / 2 - (850 + 225)) < 20
    out = ps.prepare(tmp_path / "out", resolution=128)
    assert len(list(out.glob("*.png"))) == 2


def test_pets_get_a_square_crop_without_faces(tmp_path: Path) -> None:
    make_photos(tmp_path / "p", 4, size=(400, 300), seed=2, kind="pet")
    ps = PhotoSet.from_folder(tmp_path / "p", subject_class="pet")
    assert len(ps.photos) == 4
    for p in ps.photos:
        assert p.faces is None and p.crop_box.width == p.crop_box.height == 300
    assert not any("face" in a for a in ps.report().advice)


def test_no_face_and_blur_are_flagged(tmp_path: Path) -> None:
    from PIL import ImageFilter

    make_photos(tmp_path / "p", 3, size=(320, 400), seed=4)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (400, 320, 3), dtype=np.uint8)).filter(
        ImageFilter.GaussianBlur(6)).save(tmp_path / "p" / "fog.png")
    ps = PhotoSet.from_folder(tmp_path / "p")
    fog = next(p for p in ps.photos if p.source.name == "fog.png")
    assert fog.faces == 0
    assert any("No face" in w for w in fog.warnings) and any("blurry" in w for w in fog.warnings)
    sharp = [p for p in ps.photos if p.source.name != "fog.png"]
    assert all(not any("blurry" in w for w in p.warnings) for p in sharp)
    advice = " ".join(ps.report().advice)
    assert "1 photo(s) show no detectable face" in advice and "10-20" in advice


def test_report_json_and_table(checked) -> None:
    ps, _ = checked
    report = ps.report()
    data = json.loads(report.to_json())
    assert data["usable"] is True
    assert data["counts"] == {"accepted": 13, "rejected": 13, "skipped": 4}
    text = str(report)
    assert "a_good.jpg" in text and "rejected" in text and "Usable: 13" in text


def test_draft_decodes_large_jpegs_small(tmp_path: Path) -> None:
    p = make_photos(tmp_path, 1, size=(2400, 1800), seed=0)[0]
    opened = open_photo(p)
    assert opened.decode(512).size == (1200, 900)  # 1/2 scale: 1/4 would be under 512
    assert open_photo(p).decode(256).size == (600, 450)
    assert open_photo(p).decode().size == (2400, 1800)


def test_heic_orientation_is_applied_once(tmp_path: Path) -> None:
    im = Image.new("RGB", (300, 200), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 60, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    import pillow_heif

    pillow_heif.register_heif_opener()
    im.save(tmp_path / "r.heic", format="HEIF", exif=exif.tobytes(), quality=90)
    opened = open_photo(tmp_path / "r.heic")
    assert opened.kind == "heif" and opened.size == (200, 300)
    up = np.asarray(opened.decode())
    assert up[10, 190, 0] > 200 and up[10, 10, 0] < 60  # the mark is top-right, as on the phone


def test_huge_files_are_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lensa_for_all.photos import reading

    monkeypatch.setattr(reading, "MAX_FILE_BYTES", 1000)
    p = tmp_path / "video.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 5000)
    with pytest.raises(UnreadablePhoto) as info:
        open_photo(p)
    assert info.value.code == "too_large" and "larger than any photo" in info.value.reason


def test_avif_is_read_by_content(tmp_path: Path) -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")  # pragma: no cover
    p = tmp_path / "photo.heic"  # wrong extension on purpose
    Image.new("RGB", (300, 260), (10, 200, 30)).save(p, "AVIF")
    opened = open_photo(p)
    assert opened.kind == "avif" and opened.size == (300, 260)
    assert np.asarray(opened.decode())[5, 5, 1] > 180
