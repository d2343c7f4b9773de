"""The one table of subject classes: which words name a person, a pet or an object.

Three things depend on what the subject is, and all three read this table so they can never disagree:
the training preset (:meth:`TrainingConfig.for_subject`: people get prior preservation and a trained
text encoder), the photo check (face detection and a face-centred crop only for people) and the prompt
templates (person or non-human templates). A class that is not in the table is an error listing the
close matches, unless the caller says what kind of subject it is (``subject_kind="pet"``, or
``--subject-kind pet`` on the command line); then that kind drives all three.
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

import attrs

from .errors import UsageError

__all__ = ["SUBJECT_KINDS", "SubjectKind", "Subject", "CLASSES", "ALIASES", "resolve_subject", "kind_of",
           "classes_of_kind", "close_matches"]

SubjectKind = Literal["person", "pet", "object"]
SUBJECT_KINDS: tuple[SubjectKind, ...] = ("person", "pet", "object")

_PEOPLE = ("person", "man", "woman", "boy", "girl", "child", "kid", "baby", "toddler", "teenager", "lady",
           "gentleman")
_PETS = ("pet", "dog", "puppy", "cat", "kitten", "animal", "rabbit", "bunny", "hamster", "guinea pig", "bird",
         "parrot", "horse", "pony", "ferret", "fox", "lizard", "turtle", "pig", "goat", "cow", "sheep")
_OBJECTS = ("object", "toy", "plushie", "teddy bear", "figurine", "doll", "robot", "car", "bike", "shoe",
            "sneaker", "bag", "backpack", "handbag", "mug", "cup", "bottle", "vase", "watch", "hat", "chair",
            "lamp", "guitar", "clock", "sculpture", "building", "house")

CLASSES: dict[str, SubjectKind] = {
    **{word: "person" for word in _PEOPLE},
    **{word: "pet" for word in _PETS},
    **{word: "object" for word in _OBJECTS},
}
"""Every known class word and its kind. The word is what prompts say: ``"ohwx woman"``."""

ALIASES: dict[str, str] = {
    "people": "person", "persons": "person", "human": "person", "men": "man", "male": "man", "guy": "man",
    "women": "woman", "female": "woman", "boys": "boy", "girls": "girl", "children": "child", "kids": "kid",
    "dogs": "dog", "puppies": "puppy", "cats": "cat", "kittens": "kitten", "animals": "animal",
    "pets": "pet", "objects": "object", "toys": "toy", "cars": "car", "shoes": "shoe",
}
"""Words that mean a class in the table (mostly plurals: DreamBooth learns one subject)."""

_WORD = re.compile(r"^[a-z][a-z'-]*( [a-z][a-z'-]*){0,2}$")


@attrs.frozen
class Subject:
    """A subject class word and its kind; what the preset, the face check and the prompts need to know."""

    name: str
    kind: SubjectKind

    @property
    def preset(self) -> str:
        """The training preset family: ``"people"``, ``"pets"`` or ``"objects"``."""
        return {"person": "people", "pet": "pets", "object": "objects"}[self.kind]

    @property
    def detects_faces(self) -> bool:
        """Whether the photo check looks for faces and crops around them."""
        return self.kind == "person"

    @property
    def prompt_kind(self) -> Literal["person", "pet"]:
        """Which templates prompts use: people get the person ones, pets and objects the non-human ones."""
        return "person" if self.kind == "person" else "pet"


def _normalise(subject_class: str) -> str:
    return " ".join(str(subject_class).strip().lower().replace("_", " ").split())


def classes_of_kind(kind: SubjectKind) -> frozenset[str]:
    """The class words of one kind, aliases included."""
    return frozenset({w for w, k in CLASSES.items() if k == kind} | {a for a, w in ALIASES.items()
                                                                    if CLASSES[w] == kind})


def close_matches(subject_class: str, limit: int = 4) -> list[str]:
    """Known class words spelled like ``subject_class`` (for "did you mean")."""
    near = difflib.get_close_matches(_normalise(subject_class), [*CLASSES, *ALIASES], n=limit * 2, cutoff=0.6)
    return list(dict.fromkeys(ALIASES.get(w, w) for w in near))[:limit]


def kind_of(subject_class: str, declared: str | None = None) -> SubjectKind:
    """The kind of a class, leniently: a known word's kind, else ``declared``, else ``"object"``.

    For code that must not fail on a model trained with an unlisted class (prompts for an old model);
    new runs go through :func:`resolve_subject`, which refuses unknown classes.
    """
    word = _normalise(subject_class)
    word = ALIASES.get(word, word)
    if word in CLASSES:
        return CLASSES[word]
    if declared in SUBJECT_KINDS:
        return declared
    return "object"


def resolve_subject(subject_class: str, subject_kind: str | None = None, *, class_option: str = "subject_class=",
                    kind_option: str = "subject_kind=") -> Subject:
    """The :class:`Subject` for a class word, or :class:`~lensa_for_all.errors.UsageError` saying what to use.

    A known word (or alias: ``"people"`` is ``"person"``) has its kind from the table; ``subject_kind``,
    when given, overrides it. An unknown word is accepted only with ``subject_kind``, and must still be
    one to three plain words (it goes into every prompt). ``class_option``/``kind_option`` are how the
    messages name the two settings (the command line passes ``--class`` and ``--subject-kind``).
    """
    if subject_kind is not None and subject_kind not in SUBJECT_KINDS:
        raise UsageError(f"{kind_option} must be one of {', '.join(SUBJECT_KINDS)}, not {subject_kind!r}.")
    word = _normalise(subject_class)
    if not word:
        raise UsageError(f"{class_option} must not be empty: name what the photos show, e.g. person, man, woman, "
                         "dog or cat.")
    word = ALIASES.get(word, word)
    if word in CLASSES:
        return Subject(word, subject_kind or CLASSES[word])
    if not _WORD.match(word):
        raise UsageError(f"{class_option} {subject_class!r} is not a plain word: it goes into every prompt as "
                         "'<token> <class>', so use one to three words of letters, e.g. person, dog, teddy bear.")
    if subject_kind is None:
        near = close_matches(word)
        hint = f"Did you mean {' or '.join(near)}? " if near else ""
        raise UsageError(
            f"Unknown subject class {subject_class!r}. {hint}Known classes: people ({', '.join(_PEOPLE[:6])}, ...), "
            f"pets ({', '.join(_PETS[:6])}, ...), objects ({', '.join(_OBJECTS[:6])}, ...). If {word!r} is what "
            f"you mean, say what kind of subject it is with {kind_option} (person, pet or object)."
        )
    return Subject(word, subject_kind)
