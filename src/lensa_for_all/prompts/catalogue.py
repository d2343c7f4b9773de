"""The curated style catalogue: prompt templates for people and pets, negatives and suggested settings.

The catalogue is data (``styles.json`` shipped in the package) so styles can be reviewed and extended
without touching code; users load their own file with :meth:`StyleCatalogue.from_file` and merge it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs

from ..errors import ConfigError
from ..subjects import classes_of_kind, kind_of

__all__ = ["SUBJECT_PLACEHOLDER", "SubjectKind", "Style", "StyleCatalogue", "subject_kind_for", "PET_CLASSES"]

SUBJECT_PLACEHOLDER = "{subject}"
SubjectKind = Literal["person", "pet"]

# Kept for compatibility; the table lives in lensa_for_all.subjects.
PET_CLASSES = classes_of_kind("pet")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def subject_kind_for(subject_class: str, declared: str | None = None) -> SubjectKind:
    """Which templates a class gets: ``"person"`` for people, ``"pet"`` (the non-human ones) for pets and objects.

    The kind comes from :mod:`lensa_for_all.subjects` (``declared`` for a class not in its table).
    """
    return "person" if kind_of(subject_class, declared) == "person" else "pet"


def _check_template(style: Style, attribute: attrs.Attribute[str], value: str) -> None:
    count = value.count(SUBJECT_PLACEHOLDER)
    if count != 1:
        raise ConfigError(
            f"Style {style.name!r}: the {attribute.name} template must contain {SUBJECT_PLACEHOLDER} exactly "
            f"once (found {count}); it is where '<token> <class>' goes."
        )
    stray = re.sub(re.escape(SUBJECT_PLACEHOLDER), "", value)
    if "{" in stray or "}" in stray:
        raise ConfigError(f"Style {style.name!r}: the {attribute.name} template has braces other than "
                          f"{SUBJECT_PLACEHOLDER}; remove them.")


def _check_name(style: Style, attribute: attrs.Attribute[str], value: str) -> None:
    if not _NAME.match(value):
        raise ConfigError(f"Style name {value!r} must be lower-case letters, digits, '_' or '-'.")


def _check_settings(style: Style, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    allowed = {"guidance_scale", "num_inference_steps"}
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"Style {style.name!r}: unknown settings {sorted(unknown)}; allowed: {sorted(allowed)}.")
    for key, v in value.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"Style {style.name!r}: setting {key} must be a positive number, not {v!r}.")


@attrs.frozen
class Style:
    """One catalogue entry. ``negative`` holds the style's own negatives, added to the catalogue's base ones."""

    name: str = attrs.field(validator=_check_name)
    group: str = attrs.field(validator=attrs.validators.min_len(1))
    person: str = attrs.field(validator=_check_template)
    pet: str = attrs.field(validator=_check_template)
    negative: str = ""
    settings: Mapping[str, float] = attrs.field(factory=dict, validator=_check_settings,
                                                converter=lambda d: dict(d or {}))

    def template(self, kind: SubjectKind) -> str:
        return self.person if kind == "person" else self.pet


def _group_key(name: str) -> str:
    """Group names match regardless of case, hyphens, underscores and spacing ("Sci_Fi" == "sci-fi")."""
    return " ".join(name.lower().replace("-", " ").replace("_", " ").split())


@attrs.frozen
class StyleCatalogue:
    """An ordered, name-indexed set of :class:`Style` plus the base negative prompt per subject kind."""

    styles: tuple[Style, ...] = attrs.field(converter=lambda v: tuple(v))
    negative_base: Mapping[str, str] = attrs.field(factory=dict, converter=lambda d: dict(d or {}))
    # Short names users type for a group ("headshot" -> "professional headshot").
    group_aliases: Mapping[str, str] = attrs.field(factory=dict, converter=lambda d: dict(d or {}))

    def __attrs_post_init__(self) -> None:
        names = [s.name for s in self.styles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"Duplicate style names in the catalogue: {dupes}.")
        if not self.styles:
            raise ConfigError("A style catalogue needs at least one style.")
        groups = {_group_key(g) for g in self.groups()}
        unknown = sorted(a for a, g in self.group_aliases.items() if _group_key(g) not in groups)
        if unknown:
            raise ConfigError(f"Group aliases {unknown} point to groups the catalogue does not have.")

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def default(cls) -> StyleCatalogue:
        """The catalogue shipped with the package."""
        text = resources.files(__package__).joinpath("styles.json").read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text), source="the built-in styles.json")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> StyleCatalogue:
        """Load a user catalogue (same JSON layout as the built-in ``styles.json``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"Style catalogue {path} does not exist.") from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Style catalogue {path} is not readable JSON: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "catalogue") -> StyleCatalogue:
        if not isinstance(data, Mapping) or not isinstance(data.get("styles"), list):
            raise ConfigError(f"{source}: expected an object with a 'styles' list.")
        styles: list[Style] = []
        for i, entry in enumerate(data["styles"]):
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{source}: style #{i} is not an object.")
            missing = {"name", "group", "person", "pet"} - set(entry)
            if missing:
                raise ConfigError(f"{source}: style #{i} ({entry.get('name', '?')}) lacks {sorted(missing)}.")
            styles.append(Style(**{k: entry[k] for k in ("name", "group", "person", "pet", "negative", "settings")
                                   if k in entry}))
        return cls(styles, data.get("negative_base", {}), data.get("group_aliases", {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "negative_base": dict(self.negative_base),
            "groups": self.groups(),
            "group_aliases": dict(self.group_aliases),
            "styles": [attrs.asdict(s) for s in self.styles],
        }

    def merged(self, other: StyleCatalogue) -> StyleCatalogue:
        """This catalogue with ``other``'s styles added; a style of the same name is replaced."""
        by_name = {s.name: s for s in self.styles}
        by_name.update({s.name: s for s in other.styles})
        return StyleCatalogue(tuple(by_name.values()), {**self.negative_base, **other.negative_base},
                              {**self.group_aliases, **other.group_aliases})

    # -- queries -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Style]:
        return iter(self.styles)

    def __len__(self) -> int:
        return len(self.styles)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.styles)

    def __getitem__(self, name: str) -> Style:
        for s in self.styles:
            if s.name == name:
                return s
        raise ConfigError(f"Unknown style {name!r}. Known styles: {', '.join(s.name for s in self.styles)}.")

    def groups(self) -> list[str]:
        return list(dict.fromkeys(s.group for s in self.styles))

    def negative_for(self, style: Style, kind: SubjectKind) -> str:
        """The full negative prompt: the style's own terms, then the base terms for people or pets."""
        parts = [p for p in (style.negative, self.negative_base.get(kind, "")) if p]
        return ", ".join(parts)

    def select(self, names: Iterable[str] | None = None) -> list[Style]:
        """Styles named by style name or group name (all styles for ``None``), in catalogue order."""
        if names is None:
            return list(self.styles)
        wanted = [n.strip() for n in names if n.strip()]
        if not wanted:
            return list(self.styles)
        groups = {_group_key(g): g for g in self.groups()}
        groups.update({_group_key(a): groups[_group_key(g)] for a, g in self.group_aliases.items()})
        chosen: dict[str, Style] = {}
        for n in wanted:
            if n in self:
                chosen.setdefault(n, self[n])
            elif _group_key(n) in groups:
                for s in self.styles:
                    if s.group == groups[_group_key(n)]:
                        chosen.setdefault(s.name, s)
            else:
                raise ConfigError(
                    f"Unknown style or group {n!r}. Groups: {', '.join(self.groups())}. "
                    "Run `lensa-for-all prompts --list` to see every style."
                )
        return [s for s in self.styles if s.name in chosen]
