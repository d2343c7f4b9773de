"""MkDocs hook: list items indented the CommonMark way render as they do on GitHub.

The guides are written for GitHub, where the content of ``1. item`` may be indented by three spaces (the
width of the marker). Python-Markdown, which MkDocs uses, needs four: with three, a table, a code block or
a second paragraph inside an item falls out of the list and the numbering restarts. This hook widens the
indentation of top-level list items to four spaces before the page is converted; the files stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

ITEM = re.compile(r"^(?P<marker>(?:\d{1,9}[.)]|[-*+]) +)\S")
FENCE = re.compile(r"^ *(```|~~~)")
WIDTH = 4


def widen_list_indentation(markdown: str) -> str:
    """Shift the lines of each top-level list item so its content starts at column 4 (or more)."""
    out: list[str] = []
    content = 0  # the content column of the open top-level item; 0 when none is open
    loose = False  # the open item holds a blank line, so its content is blocks, not one paragraph
    fence: str | None = None  # the fence of a top-level code block being copied as is
    for line in markdown.split("\n"):
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if fence is not None:  # inside a top-level fenced block: copy
            if stripped.startswith(fence) and indent == 0:
                fence = None
            out.append(line)
            continue
        was_loose = bool(content) and loose
        if content and stripped and indent < content:
            content, loose = 0, False  # a line left of the item's content closes it
        if not content:
            match = ITEM.match(line)
            fence_match = FENCE.match(line)
            if fence_match and indent == 0:
                fence = fence_match.group(1)
            elif match:
                # after a multi-block item, Python-Markdown reads "2. next" as part of the last paragraph
                # unless a blank line separates them; CommonMark starts the next item either way
                if was_loose and out and out[-1].strip():
                    out.append("")
                content = len(match.group("marker"))
            out.append(line)
            continue
        if not stripped:
            loose = True
        shift = max(0, WIDTH - content)
        out.append(" " * shift + line if stripped else line)
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return widen_list_indentation(markdown)
