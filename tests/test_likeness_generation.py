"""generate(keep_best=N): candidates scored by face likeness with real weights, the N best kept and recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lensa_for_all.errors import ConfigError, LikenessUnavailable
from lensa_for_all.generation import AvatarModel
from likeness_helpers import ScriptedRunner, needs_likeness, write_set


@pytest.fixture(scope="module")
def subject_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    needs_likeness()
    folder = tmp_path_factory.mktemp("subject") / "astronaut"
    write_set(folder, ["astronaut"] * 3, seed=40)
    return folder


@pytest.mark.slow
def test_keep_best_keeps_the_subject_and_records_scores(subject_photos: Path, tmp_path: Path) -> None:
    runner = ScriptedRunner()
    model = AvatarModel(runner, name="scripted", manifest={"token": "ohwx", "subject_class": "woman"})
    seen: list[Any] = []
    out = tmp_path / "pack"
    pack = model.generate("a portrait of ohwx woman", 6, seed=0, keep_best=2, references=subject_photos,
                          out_dir=out, on_avatar=seen.append)
    assert sorted(runner.rendered) == [0, 1, 2, 3, 4, 5]  # all six candidates rendered
    assert [a.seed for a in pack] == [0, 3]  # the two shots of the subject, in pack order
    assert pack.requested == 2 and not pack.interrupted and seen == list(pack)
    assert all(a.likeness is not None and a.likeness > 0.5 for a in pack)

    index = json.loads((out / "avatars.json").read_text())
    assert [e["seed"] for e in index["avatars"]] == [0, 3]
    assert [e["likeness"] for e in index["avatars"]] == [a.likeness for a in pack]
    assert len(list(out.glob("*.png"))) == 2 and (out / "contact_sheet.jpg").is_file()
    assert "likeness" not in pack[0].a1111_parameters().lower()  # a score, not a generation parameter

    best_first = pack.by_likeness()
    assert [a.likeness for a in best_first] == sorted((a.likeness for a in pack), reverse=True)
    from lensa_for_all.generation.pack import AvatarPack

    loaded = AvatarPack.load(out)
    assert [a.likeness for a in loaded] == [a.likeness for a in pack]


def test_keep_best_scores_other_people_lower(subject_photos: Path) -> None:
    from lensa_for_all.generation.best import pick_best
    from lensa_for_all.likeness import FaceIdentity

    model = AvatarModel(ScriptedRunner(), name="scripted", manifest={"token": "ohwx", "subject_class": "woman"})
    candidates = model.generate("ohwx woman", 3, seed=0)
    identity = FaceIdentity()
    refs = identity.references(sorted(subject_photos.iterdir()))
    scored = pick_best(list(candidates), 3, refs, identity)
    subject, *others = scored
    assert subject.seed == 0 and all(o.likeness is not None and subject.likeness > 0.5 > o.likeness for o in others)


def test_keep_best_arguments_are_checked_before_rendering(subject_photos: Path) -> None:
    runner = ScriptedRunner()
    model = AvatarModel(runner, name="scripted", manifest={"token": "ohwx", "subject_class": "woman"})
    with pytest.raises(ConfigError, match="references="):
        model.generate("ohwx woman", 4, keep_best=2)
    with pytest.raises(ConfigError, match="at least 3"):
        model.generate("ohwx woman", 2, keep_best=3, references=subject_photos)
    with pytest.raises(ConfigError, match="keep_best must be at least 1"):
        model.generate("ohwx woman", 2, keep_best=0, references=subject_photos)
    assert runner.rendered == []


def test_contact_sheet_sorted_by_likeness() -> None:
    from PIL import Image

    from lensa_for_all.generation.pack import Avatar, AvatarPack

    def avatar(colour: tuple[int, int, int], likeness: float | None) -> Avatar:
        return Avatar(image=Image.new("RGB", (32, 32), colour), prompt="p", negative_prompt="", seed=1,
                      num_inference_steps=1, guidance_scale=7.0, scheduler="ddim", width=32, height=32,
                      likeness=likeness)

    pack = AvatarPack([avatar((255, 0, 0), 0.2), avatar((0, 255, 0), None), avatar((0, 0, 255), 0.9)])
    sheet = pack.contact_sheet(columns=3, cell=32, padding=0, sort="likeness")
    assert [sheet.getpixel((16 + 32 * i, 16)) for i in range(3)] == [(0, 0, 255), (255, 0, 0), (0, 255, 0)]
    plain = pack.contact_sheet(columns=3, cell=32, padding=0)
    assert plain.getpixel((16, 16)) == (255, 0, 0)
    with pytest.raises(ConfigError, match="sort must be"):
        pack.contact_sheet(sort="seed")
    assert "likeness" not in pack[1].parameters() and pack[2].parameters()["likeness"] == 0.9


def test_cli_keep_best_needs_photos_and_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from lensa_for_all.cli.main import main

    model_dir = tmp_path / "no-model-needed"  # the checks come before the model is loaded
    assert main(["generate", str(model_dir), "--out", str(tmp_path / "o"), "--keep-best", "2"]) == 2
    assert "--keep-best needs --photos" in capsys.readouterr().err
    monkeypatch.setattr("lensa_for_all.likeness.is_available", lambda: False)
    assert main(["generate", str(model_dir), "--out", str(tmp_path / "o"), "--keep-best", "2",
                 "--photos", str(tmp_path)]) == 1
    assert 'pip install "lensa-for-all[likeness]"' in capsys.readouterr().err
    with pytest.raises(LikenessUnavailable):
        from lensa_for_all.training.evaluators import make_evaluator

        make_evaluator("likeness")


@pytest.mark.slow
def test_cli_keep_best_on_the_tiny_model(tiny_sd: Path, subject_photos: Path, tmp_path: Path) -> None:
    from lensa_for_all.cli.main import main

    out = tmp_path / "avatars"
    assert main(["generate", str(tiny_sd), "--out", str(out), "-n", "3", "--keep-best", "2", "--photos",
                 str(subject_photos), "--steps", "1", "--seed", "5", "--prompt", "a photo of ohwx person"]) == 0
    index = json.loads((out / "avatars.json").read_text())
    assert len(index["avatars"]) == 2
    # the random-weight model draws no faces: every candidate scores 0 and the first two are kept
    assert [(e["seed"], e["likeness"]) for e in index["avatars"]] == [(5, 0.0), (6, 0.0)]
