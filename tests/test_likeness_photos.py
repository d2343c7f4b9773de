"""The photo check with face likeness: a photo of someone else is named; without the extra it says how to add it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensa_for_all.errors import LikenessUnavailable
from lensa_for_all.photos import PhotoSet
from likeness_helpers import needs_likeness, write_set


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four shots of the astronaut and one of Grace Hopper."""
    needs_likeness()
    folder = tmp_path_factory.mktemp("mixed") / "photos"
    write_set(folder, ["astronaut"] * 4 + ["hopper"])
    return folder


@pytest.mark.slow
def test_check_names_the_photo_of_another_person(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lensa_for_all.cli.main import main

    assert main(["check", str(mixed), "--json"]) == 0  # still usable: a warning, not a rejection
    report = json.loads(capsys.readouterr().out)
    assert report["identity"]["mismatched"] == [str(mixed / "04-hopper.jpg")]
    assert report["identity"]["consistency"] > 0.5
    by_name = {Path(f["path"]).name: f for f in report["files"]}
    assert by_name["04-hopper.jpg"]["likeness"] < 0.5
    assert any("does not match the other photos" in w for w in by_name["04-hopper.jpg"]["warnings"])
    assert all(by_name[f"0{i}-astronaut.jpg"]["likeness"] > 0.6 for i in range(4))
    assert any("04-hopper.jpg" in w for w in report["warnings"])

    assert main(["check", str(mixed)]) == 0
    table = capsys.readouterr().out
    assert "likeness" in table and "Not the same person as the other photos: 04-hopper.jpg" in table
    assert "Same person across photos" in table


def test_a_consistent_set_flags_nothing_and_several_faces_are_counted(tmp_path: Path) -> None:
    needs_likeness()
    from PIL import Image

    from likeness_helpers import augmented, portrait

    folder = tmp_path / "photos"
    write_set(folder, ["coelho"] * 3)
    pair = Image.new("RGB", (1000, 560), (90, 120, 90))
    pair.paste(augmented(portrait("coelho"), 7, size=(480, 540)), (10, 10))
    pair.paste(augmented(portrait("hopper"), 8, size=(480, 540)), (510, 10))
    pair.save(folder / "09-two.jpg", quality=90)
    ps = PhotoSet.from_folder(folder)
    assert ps.identity is not None and ps.identity.mismatched == ()
    assert ps.identity.faces[folder / "09-two.jpg"] == 2
    assert ps.report().to_dict()["identity"]["several_faces"] == [str(folder / "09-two.jpg")]
    two = next(p for p in ps.photos if p.source.name == "09-two.jpg")
    assert any("2 faces" in w for w in two.warnings)


def test_without_the_extra_the_check_works_and_says_how_to_add_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from lensa_for_all.testing import make_photos

    make_photos(tmp_path / "p", 4, size=(320, 400))
    monkeypatch.setattr("lensa_for_all.likeness.is_available", lambda: False)
    ps = PhotoSet.from_folder(tmp_path / "p")
    assert ps.identity is None and all(p.likeness is None for p in ps.photos)
    report = ps.report()
    assert report.to_dict()["identity"] is None
    assert any('pip install "lensa-for-all[likeness]"' in tip for tip in report.advice)
    assert "likeness" not in str(report).split("\n")[2]  # no likeness column
    with pytest.raises(LikenessUnavailable, match="likeness extra"):
        PhotoSet.from_folder(tmp_path / "p", likeness=True)


def test_no_likeness_skips_the_comparison(mixed: Path) -> None:
    ps = PhotoSet.from_folder(mixed, likeness=False)
    assert ps.identity is None and not ps.warnings()
    pets = PhotoSet.from_folder(mixed, subject_class="dog")
    assert pets.identity is None  # faces are compared for people only


@pytest.mark.slow
def test_the_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    needs_likeness()
    import runpy

    runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "likeness.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Not the same person as the other photos: party-friend.jpg" in out
    assert "Hopper: likeness 0." in out and "(same person: False)" in out
