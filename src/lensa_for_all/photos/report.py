"""The QC report: what happened to each file and what to do about the set, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console, RenderableType

__all__ = ["FileReport", "QCReport"]

STATUSES = ("accepted", "rejected", "skipped")


@attrs.frozen
class FileReport:
    """One file's outcome: ``status`` is accepted, rejected (with ``reason``) or skipped (OS junk, folders)."""

    path: str
    status: str = attrs.field(validator=attrs.validators.in_(STATUSES))
    reason: str | None = None
    code: str | None = None
    size: tuple[int, int] | None = None
    faces: int | None = None
    sharpness: float | None = None
    duplicate_of: str | None = None
    warnings: tuple[str, ...] = ()
    likeness: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self, recurse=False)
        d["size"] = list(self.size) if self.size else None
        d["warnings"] = list(self.warnings)
        d["sharpness"] = None if self.sharpness is None else round(self.sharpness, 1)
        d["likeness"] = None if self.likeness is None else round(self.likeness, 3)
        return d


@attrs.frozen
class QCReport:
    """The photo check for a whole set: per file results, set-level warnings, advice, and the verdict."""

    subject_class: str
    min_photos: int
    files: tuple[FileReport, ...]
    warnings: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()
    identity: dict[str, Any] | None = None
    """The face comparison (``[likeness]`` extra): consistency, mismatched, several_faces, no_face; else None."""

    @property
    def accepted(self) -> tuple[FileReport, ...]:
        return tuple(f for f in self.files if f.status == "accepted")

    @property
    def rejected(self) -> tuple[FileReport, ...]:
        return tuple(f for f in self.files if f.status == "rejected")

    @property
    def skipped(self) -> tuple[FileReport, ...]:
        return tuple(f for f in self.files if f.status == "skipped")

    @property
    def usable(self) -> bool:
        """True when enough photos were accepted to train on."""
        return len(self.accepted) >= self.min_photos

    def to_dict(self) -> dict[str, Any]:
        return {
            "usable": self.usable,
            "subject_class": self.subject_class,
            "min_photos": self.min_photos,
            "counts": {s: sum(f.status == s for f in self.files) for s in STATUSES},
            "files": [f.to_dict() for f in self.files],
            "warnings": list(self.warnings),
            "advice": list(self.advice),
            "identity": self.identity,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __rich__(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"Photo check ({self.subject_class})", show_lines=False)
        columns = ["file", "status", "size", "faces", "sharpness", "notes"]
        if self.identity is not None:
            columns.insert(5, "likeness")
        for col in columns:
            table.add_column(col, overflow="fold")
        style = {"accepted": "green", "rejected": "red", "skipped": "dim"}
        for f in self.files:
            notes = [f.reason] if f.reason else []
            notes += list(f.warnings)
            cells: list[Any] = [
                Text(PurePath(f.path).name),
                Text(f.status, style=style[f.status]),
                f"{f.size[0]}x{f.size[1]}" if f.size else "",
                "" if f.faces is None else str(f.faces),
                "" if f.sharpness is None else f"{f.sharpness:.0f}",
                Text("\n".join(notes)),
            ]
            if self.identity is not None:
                cells.insert(5, "" if f.likeness is None else f"{f.likeness:.2f}")
            table.add_row(*cells)
        verdict = (Text(f"Usable: {len(self.accepted)} photos accepted.", style="bold green") if self.usable
                   else Text(f"Not usable: {len(self.accepted)} accepted, at least {self.min_photos} needed.",
                             style="bold red"))
        parts: list[Any] = [table, verdict]
        consistency = (self.identity or {}).get("consistency")
        if consistency is not None:
            parts.append(Text(f"Same person across photos: median face likeness {consistency:.2f} (over 0.5 "
                              "is the same person)."))
        parts += [Text(f"warning: {w}", style="yellow") for w in self.warnings]
        parts += [Text(f"tip: {a}") for a in self.advice]
        return Group(*parts)

    def print(self, console: Console | None = None) -> None:
        """Print the table, verdict, warnings and advice to ``console`` (stdout by default)."""
        from rich.console import Console

        (console or Console()).print(self)

    def __str__(self) -> str:
        import io

        from rich.console import Console

        buffer = io.StringIO()
        Console(width=120, file=buffer, color_system=None).print(self)
        return buffer.getvalue()
