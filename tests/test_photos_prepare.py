"""PhotoSet.prepare: atomic, idempotent, never touching the source folder; and the check/prepare CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lensa_for_all.cli.main import main
from lensa_for_all.errors import PhotoSetError
from lensa_for_all.photos import PhotoSet, photoset
from lensa_for_all.testing.photos import make_photos
from photos_helpers import tree_hashes


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    make_photos(tmp_path / "me", 5, size=(480, 600), seed=11)
    return tmp_path / "me"


def _stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_prepare_is_idempotent(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree_hashes(photos)
    ps = PhotoSet.from_folder(photos)
    out = ps.prepare(tmp_path / "out", resolution=128)
    first = _stats(out)
    assert len(first) == 6  # five PNGs + manifest.json

    def fail(*args: object, **kwargs: object) -> str:
        raise AssertionError("a second identical prepare() decoded or wrote a photo")

    monkeypatch.setattr(photoset, "_write_square", fail)
    assert PhotoSet.from_folder(photos).prepare(out, resolution=128) == out
    assert _stats(out) == first  # not even the manifest was rewritten
    assert tree_hashes(photos) == before


def test_prepare_redoes_changed_or_missing_outputs(photos: Path, tmp_path: Path) -> None:
    ps = PhotoSet.from_folder(photos)
    out = ps.prepare(tmp_path / "out", resolution=128)
    manifest = json.loads((out / "manifest.json").read_text())
    victim = out / manifest["photos"][0]["file"]
    victim.write_bytes(b"edited")
    (out / manifest["photos"][1]["file"]).unlink()
    ps.prepare(out, resolution=128)
    with Image.open(victim) as im:
        assert im.size == (128, 128)
    assert len(list(out.glob("*.png"))) == 5


def test_new_settings_and_fewer_photos_replace_old_outputs(photos: Path, tmp_path: Path) -> None:
    out = PhotoSet.from_folder(photos).prepare(tmp_path / "out", resolution=128)
    (photos / "person_04.jpg").rename(tmp_path / "moved.jpg")
    ps = PhotoSet.from_folder(photos)
    ps.prepare(out, resolution=256)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["resolution"] == 256 and len(manifest["photos"]) == 4
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == sorted(e["file"] for e in manifest["photos"])
    for p in pngs:
        with Image.open(p) as im:
            assert im.size == (256, 256)


def test_prepare_refuses_to_write_into_the_photo_folder(photos: Path) -> None:
    ps = PhotoSet.from_folder(photos)
    before = tree_hashes(photos)
    with pytest.raises(PhotoSetError, match="inside the photo folder"):
        ps.prepare(photos / "prepared")
    with pytest.raises(PhotoSetError, match="inside the photo folder"):
        ps.prepare(photos)
    assert tree_hashes(photos) == before


def test_prepare_notices_a_source_changed_after_the_check(photos: Path, tmp_path: Path) -> None:
    ps = PhotoSet.from_folder(photos)
    src = ps.photos[2].source
    src.write_bytes(src.read_bytes() + b"\x00")
    with pytest.raises(PhotoSetError, match="changed since it was checked"):
        ps.prepare(tmp_path / "out")


def test_prepare_rejects_bad_resolution(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(PhotoSetError, match="multiple of 8"):
        PhotoSet.from_folder(photos).prepare(tmp_path / "out", resolution=500)


def test_cli_check_usable_and_json(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(photos), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["usable"] is True and data["counts"]["accepted"] == 5
    assert main(["check", str(photos)]) == 0
    assert "Usable: 5 photos accepted" in capsys.readouterr().out


def test_cli_check_unusable_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_photos(tmp_path / "few", 2, size=(320, 400), seed=9)
    (tmp_path / "few" / "list.txt").write_text("shopping")
    assert main(["check", str(tmp_path / "few"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["usable"] is False
    assert [f["code"] for f in data["files"] if f["status"] == "rejected"] == ["not_image"]
    assert main(["check", str(tmp_path / "few")]) == 1
    assert "Not usable" in capsys.readouterr().out


def test_cli_prepare(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prepared"
    assert main(["prepare", str(photos), "--out", str(out), "--resolution", "64", "--class", "person"]) == 0
    assert "Prepared 5 photos" in capsys.readouterr().out
    assert len(json.loads((out / "manifest.json").read_text())["photos"]) == 5
    assert main(["prepare", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_interrupted_prepare_leaves_no_partial_files(photos: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ps = PhotoSet.from_folder(photos)
    real_save = Image.Image.save
    calls = {"n": 0}

    def flaky_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            Path(str(fp)).write_bytes(b"\x89PNG half")  # a partial write, then the crash
            raise KeyboardInterrupt
        real_save(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        ps.prepare(out, resolution=64)
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and all(n.endswith(".png") and not n.startswith(".") for n in names)
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(Image.Image, "save", real_save)
    ps.prepare(out, resolution=64)  # finishes the job
    assert len(json.loads((out / "manifest.json").read_text())["photos"]) == 5
    for p in out.glob("*.png"):
        with Image.open(p) as im:
            im.load()
