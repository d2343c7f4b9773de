"""One subject table drives the training preset, the face check and the prompt templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from lensa_for_all import TrainingConfig
from lensa_for_all.errors import PhotoSetError, UsageError
from lensa_for_all.photos import PhotoSet
from lensa_for_all.prompts import PromptGenerator
from lensa_for_all.subjects import close_matches, kind_of, resolve_subject
from pipeline_helpers import copy_sample_photos


@pytest.mark.parametrize(("word", "name", "kind"), [
    ("person", "person", "person"), ("Woman", "woman", "person"), ("people", "person", "person"),
    ("  puppy ", "puppy", "pet"), ("dogs", "dog", "pet"), ("teddy_bear", "teddy bear", "object"),
    ("mug", "mug", "object"),
])
def test_known_classes_and_aliases(word: str, name: str, kind: str) -> None:
    subject = resolve_subject(word)
    assert (subject.name, subject.kind) == (name, kind)


@pytest.mark.parametrize(("word", "expected"), [("persn", "person"), ("wman", "woman"), ("kitty", "kitten")])
def test_a_typo_is_an_error_naming_the_close_match(word: str, expected: str) -> None:
    with pytest.raises(UsageError, match=f"Did you mean .*{expected}") as info:
        resolve_subject(word, kind_option="--subject-kind")
    assert "--subject-kind (person, pet or object)" in str(info.value)
    assert expected in close_matches(word)


@pytest.mark.parametrize("word", ["", "   ", "Sp@ce Alien!!", "a b c d"])
def test_empty_or_odd_classes_are_refused_even_with_a_kind(word: str) -> None:
    with pytest.raises(UsageError, match="--class"):
        resolve_subject(word, "object", class_option="--class")


def test_a_declared_kind_accepts_an_unlisted_class_and_drives_all_three(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Unknown subject class 'axolotl'"):
        TrainingConfig.for_subject("axolotl")
    pet = TrainingConfig.for_subject("axolotl", subject_kind="pet")
    assert pet.subject_class == "axolotl" and not pet.with_prior_preservation and not pet.train_text_encoder
    person = TrainingConfig.for_subject("astronaut", subject_kind="person")
    assert person.with_prior_preservation and person.train_text_encoder
    # prompts: the person templates only for people; objects get the non-human ones
    assert PromptGenerator("ohwx", "astronaut", subject_kind="person").subject_kind == "person"
    assert PromptGenerator("ohwx", "axolotl", subject_kind="object").subject_kind == "pet"
    assert PromptGenerator("ohwx", "mug").subject_kind == "pet"  # an object, no longer a person
    # the face check: faces looked for in a declared person, not in a declared pet
    photos = copy_sample_photos(tmp_path / "me", n=4)
    as_person = PhotoSet.from_folder(photos, "astronaut", subject_kind="person")
    as_pet = PhotoSet.from_folder(photos, "astronaut", subject_kind="pet")
    assert as_person.is_person and all(p.faces is not None for p in as_person.photos)
    assert not as_pet.is_person and all(p.faces is None for p in as_pet.photos)


def test_alias_people_gets_the_person_preset_and_the_face_check(tmp_path: Path) -> None:
    config = TrainingConfig.for_subject("people")
    assert config.subject_class == "person" and config.with_prior_preservation
    assert kind_of("people") == "person" and kind_of("martian") == "object" and kind_of("martian", "pet") == "pet"
    photos = PhotoSet.from_folder(copy_sample_photos(tmp_path / "me", n=4), "people")
    assert photos.is_person and all(p.faces is not None for p in photos.photos)


def test_an_empty_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "empty" / "sub").mkdir()
    with pytest.raises(PhotoSetError, match=r"No files in .*empty: put 4-20 photos"):
        PhotoSet.from_folder(tmp_path / "empty")
