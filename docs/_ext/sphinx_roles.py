"""Griffe extension for the docs site: Sphinx roles in docstrings become links.

The library's docstrings use Sphinx roles (``:class:`PhotoSet```, ``:meth:`~AvatarModel.generate```),
which read well in an IDE but show up verbatim in mkdocstrings' Markdown. This rewrites each role into an
optional cross-reference: a link when the target is on one of the API pages, plain code otherwise, so a
role naming an undocumented helper never breaks ``mkdocs build --strict``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const):`(~?)([^`<>]+?)`")


def _public_names() -> dict[str, str]:
    """Lazy public names of the package root (``Pipeline`` -> ``lensa_for_all.pipeline.Pipeline``)."""
    try:
        import lensa_for_all
    except ImportError:  # pragma: no cover - the site is built with the package installed
        return {}
    names = {name: f"{module}.{name}" for name, module in lensa_for_all._LAZY.items()}
    names.update({name: f"lensa_for_all.errors.{name}" for name in lensa_for_all.errors.__all__})
    return names


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring into an optional autorefs link."""

    def __init__(self) -> None:
        super().__init__()
        self._public = _public_names()

    def _resolve(self, obj: griffe.Object, target: str) -> str:
        head, _, rest = target.partition(".")
        if head == "lensa_for_all" and rest:
            first, _, tail = rest.partition(".")
            if first in self._public:  # lensa_for_all.Pipeline.run -> lensa_for_all.pipeline.Pipeline.run
                return self._public[first] + (f".{tail}" if tail else "")
            return target
        if head in self._public:
            return self._public[head] + (f".{rest}" if rest else "")
        try:
            return obj.resolve(head) + (f".{rest}" if rest else "")
        except Exception:  # a name griffe cannot place: leave it as written
            return target

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None or ":" not in docstring.value:
            return

        def link(match: re.Match[str]) -> str:
            short, target = match.group(1), match.group(2).strip()
            title = target.rsplit(".", 1)[-1] if short else target
            identifier = self._resolve(obj, target.rstrip("()"))
            return (f'<autoref identifier="{html.escape(identifier)}" optional>'
                    f"<code>{html.escape(title)}</code></autoref>")

        docstring.value = ROLE.sub(link, docstring.value)
