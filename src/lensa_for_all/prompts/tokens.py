"""Counting prompt tokens as CLIP does, and fitting a prompt into CLIP's 77-token window.

Stable Diffusion's text encoder silently drops everything past 77 tokens (75 plus start and end), so
a prompt is trimmed here by whole comma-separated fragments, and never through the subject phrase.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["CLIP_MAX_TOKENS", "TokenCounter", "TokenizerPair", "approximate_token_count", "token_counter_for",
           "split_fragments", "fit_prompt", "fit_negative", "count_subject"]

CLIP_MAX_TOKENS = 77  # including <|startoftext|> and <|endoftext|>

TokenCounter = Callable[[str], int]

_WORDS = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def approximate_token_count(text: str) -> int:
    """A CLIP token count estimate used only when no tokenizer is available; errs on the high side."""
    n = 2
    for piece in _WORDS.findall(text.lower()):
        n += max(1, math.ceil(len(piece) / 6)) if piece.isalpha() else 1
    return n


class TokenizerPair:
    """SDXL's two CLIP tokenizers as one: a prompt fits when it fits both, so it counts as the longer of the two.

    Called like a tokenizer (``pair(text, ...)["input_ids"]``), which is all the counters here use."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def __call__(self, text: str, **kwargs: Any) -> Any:
        a, b = self.first(text, **kwargs), self.second(text, **kwargs)
        return a if len(a["input_ids"]) >= len(b["input_ids"]) else b


def token_counter_for(tokenizer: Any | str | os.PathLike[str] | None) -> TokenCounter:
    """A counter from a CLIP tokenizer object, a tokenizer/model folder, or the estimate for ``None``."""
    if tokenizer is None:
        return approximate_token_count
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import CLIPTokenizer

        path = Path(tokenizer)
        sub = path / "tokenizer"
        try:
            tokenizer = CLIPTokenizer.from_pretrained(sub if sub.is_dir() else path)
        except OSError as exc:
            raise ConfigError(f"Cannot load a CLIP tokenizer from {path}: {exc}") from exc
    tok: Any = tokenizer

    def count(text: str) -> int:
        # verbose=False: counting a too-long prompt is the point here, not a mistake to warn about
        return len(tok(text, truncation=False, add_special_tokens=True, verbose=False)["input_ids"])

    return count


def split_fragments(text: str) -> list[str]:
    """Comma-separated fragments, stripped, empty ones dropped."""
    return [f.strip() for f in text.split(",") if f.strip()]


def count_subject(text: str, subject: str) -> int:
    """How many times ``subject`` stands in ``text`` as whole words (case-insensitive)."""
    return len(re.findall(rf"(?<![\w]){re.escape(subject)}(?![\w])", text, flags=re.IGNORECASE))


def fit_prompt(text: str, subject: str, counter: TokenCounter, *, max_tokens: int = CLIP_MAX_TOKENS) -> str:
    """Drop trailing fragments (never the subject's) until ``text`` fits ``max_tokens``.

    Raises :class:`ConfigError` if even the subject's fragment alone is too long, rather than letting
    CLIP cut the prompt somewhere the user did not choose.
    """
    if counter(text) <= max_tokens:
        return text
    fragments = split_fragments(text)
    keep = [count_subject(f, subject) > 0 for f in fragments]
    if not any(keep):
        raise ConfigError(f"The prompt does not contain the subject {subject!r}: {text!r}")
    subject_at = keep.index(True)
    chosen = [f for f, k in zip(fragments, keep, strict=True) if k]
    # Add the other fragments back in their order while the prompt still fits.
    result = list(chosen)
    for i in range(len(fragments)):
        if keep[i]:
            continue
        trial = [f for j, f in enumerate(fragments) if keep[j] or j == i]
        if counter(", ".join(trial)) <= max_tokens:
            keep[i] = True
            result = trial
    out = ", ".join(result)
    if counter(out) > max_tokens:
        raise ConfigError(
            f"The prompt fragment holding the subject is longer than CLIP's {max_tokens} tokens: "
            f"{fragments[subject_at]!r}. Shorten it."
        )
    return out


def fit_negative(text: str, counter: TokenCounter, *, max_tokens: int = CLIP_MAX_TOKENS) -> str:
    """A negative prompt cut to whole leading fragments that fit ``max_tokens`` (style terms come first)."""
    if counter(text) <= max_tokens:
        return text
    kept: list[str] = []
    for frag in split_fragments(text):
        if counter(", ".join([*kept, frag])) > max_tokens:
            break
        kept.append(frag)
    return ", ".join(kept)
