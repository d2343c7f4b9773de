"""Face likeness with dlib's real weights on real portraits of three people (see likeness_helpers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lensa_for_all.errors import LikenessUnavailable, PhotoSetError
from lensa_for_all.likeness import SAME_PERSON_DISTANCE, likeness_from_distance
from likeness_helpers import augmented, needs_likeness, portrait, portrait_path

PEOPLE = ("astronaut", "hopper", "coelho")


def test_mapping_from_dlib_distance() -> None:
    assert likeness_from_distance(0.0) == 1.0
    assert likeness_from_distance(SAME_PERSON_DISTANCE) == pytest.approx(0.5)
    assert likeness_from_distance(0.3) == pytest.approx(0.75)
    assert likeness_from_distance(1.2) == likeness_from_distance(3.0) == 0.0
    assert likeness_from_distance(0.2) > likeness_from_distance(0.4)


@pytest.fixture(scope="module")
def identity():  # type: ignore[no-untyped-def]
    needs_likeness()
    from lensa_for_all.likeness import FaceIdentity

    return FaceIdentity()


@pytest.mark.slow
def test_a_different_person_scores_below_the_same_persons_augmented_photos(identity) -> None:  # type: ignore[no-untyped-def]
    for subject in PEOPLE:
        refs = identity.references([augmented(portrait(subject), seed) for seed in range(3)])
        assert len(refs) == 3 and refs.missing == ()
        same = identity.score(augmented(portrait(subject), 10), refs)
        assert same.same_person and same.score > 0.75 and same.faces == 1
        for other in PEOPLE:
            if other == subject:
                continue
            theirs = identity.score(augmented(portrait(other), 11), refs)
            assert not theirs.same_person, (subject, other, theirs)
            assert theirs.score < 0.5 < same.score, (subject, other, theirs.score, same.score)


def test_face_box_is_in_the_input_pixels_and_small_images_are_upscaled(identity) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    photo = portrait("hopper")  # 512 x 600, face around the middle
    face = identity.embed(photo)
    assert face is not None and len(face.embedding) == 128
    big = identity.embed(photo.resize((photo.width * 2, photo.height * 2), Image.Resampling.LANCZOS))
    small = identity.embed(photo.resize((photo.width // 4, photo.height // 4), Image.Resampling.LANCZOS))
    assert big is not None and small is not None
    for other, factor in ((big, 2.0), (small, 0.25)):
        (ax, ay), (bx, by) = face.box.centre, other.box.centre
        tolerance = 0.15 * face.box.width * factor  # HOG boxes come in steps; the centre stays on the face
        assert abs(ax * factor - bx) <= tolerance and abs(ay * factor - by) <= tolerance, (face.box, other.box)
        assert 0.7 < other.box.width / (face.box.width * factor) < 1.4
        assert face.distance(other) < 0.35
    assert 0 <= face.box.left < face.box.right <= photo.width and 0 <= face.box.top < face.box.bottom <= photo.height


def test_paths_and_arrays_are_accepted_and_no_face_scores_zero(identity) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    path = portrait_path("astronaut")
    refs = identity.references([path])
    by_array = identity.score(np.asarray(portrait("astronaut")), refs)
    assert by_array.score == pytest.approx(1.0, abs=1e-6) and by_array.nearest == 0
    blank = identity.score(Image.new("RGB", (300, 300), (120, 130, 140)), refs)
    assert (blank.score, blank.faces, blank.box, blank.same_person) == (0.0, 0, None, False)
    assert blank.to_dict()["likeness"] == 0.0
    with pytest.raises(PhotoSetError, match="None of the reference photos shows a face"):
        identity.score(path, [Image.new("RGB", (300, 300))])


def test_without_the_extra_it_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import lensa_for_all.likeness as likeness

    likeness._models.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    try:
        with pytest.raises(LikenessUnavailable, match=r'pip install "lensa-for-all\[likeness\]"'):
            likeness.FaceIdentity()
    finally:
        likeness._models.cache_clear()


def test_the_model_files_are_the_5_point_and_resnet_ones(identity) -> None:  # type: ignore[no-untyped-def]
    import lensa_for_all.likeness as likeness

    folder = likeness._model_dir()
    assert (folder / likeness.LANDMARKS_MODEL).is_file() and (folder / likeness.RECOGNITION_MODEL).is_file()
    assert "68" not in likeness.LANDMARKS_MODEL
    assert isinstance(folder, Path)
