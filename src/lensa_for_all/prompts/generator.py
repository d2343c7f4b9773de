"""PromptGenerator: prompts for a trained subject from the style catalogue, optionally MagicPrompt-expanded."""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from ..errors import ConfigError, MagicPromptUnavailable
from .catalogue import SUBJECT_PLACEHOLDER, Style, StyleCatalogue, SubjectKind, subject_kind_for
from .magic import DEFAULT_MAGIC_MODEL, MagicPrompt
from .tokens import CLIP_MAX_TOKENS, TokenCounter, count_subject, fit_negative, fit_prompt, token_counter_for

__all__ = ["Prompt", "PromptGenerator", "MagicMode"]

log = logging.getLogger(__name__)

MagicMode = bool | Literal["auto"]


@attrs.frozen
class Prompt:
    """One prompt for the image model: text, negative prompt, the style it came from and its settings."""

    text: str = attrs.field(validator=attrs.validators.min_len(1))
    negative: str = ""
    style: str | None = None
    settings: Mapping[str, float] = attrs.field(factory=dict, converter=lambda d: dict(d or {}))

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "negative": self.negative, "style": self.style, "settings": dict(self.settings)}


def _check_token(value: str) -> None:
    if not value.strip() or any(c.isspace() for c in value.strip()) or "{" in value or "," in value:
        raise ConfigError(f"token must be one word without spaces, commas or braces (like 'ohwx'), not {value!r}.")


class PromptGenerator:
    """Makes prompts that name the subject as ``"<token> <class>"``, exactly once each.

    ``tokenizer`` (a CLIP tokenizer, or a model/tokenizer folder) counts tokens the way the image
    model will; without it a conservative estimate is used. ``catalogue`` replaces the built-in
    styles; ``extra_catalogue`` (a path or :class:`StyleCatalogue`) adds to them.
    """

    def __init__(
        self,
        token: str = "ohwx",
        subject_class: str = "person",
        *,
        subject_kind: str | None = None,
        catalogue: StyleCatalogue | str | os.PathLike[str] | None = None,
        extra_catalogue: StyleCatalogue | str | os.PathLike[str] | None = None,
        tokenizer: Any = None,
        magic_model: str | os.PathLike[str] | MagicPrompt = DEFAULT_MAGIC_MODEL,
        styles: Iterable[str] | None = None,
        magic: MagicMode = False,
        max_tokens: int = CLIP_MAX_TOKENS,
    ) -> None:
        _check_token(token)
        if not subject_class.strip():
            raise ConfigError("subject_class must not be empty (e.g. 'person', 'man', 'woman', 'dog', 'cat').")
        if magic not in (True, False, "auto"):
            raise ConfigError(f"magic must be True, False or 'auto', not {magic!r}.")
        self.token = token.strip()
        self.subject_class = subject_class.strip()
        if subject_kind not in (None, "person", "pet", "object"):
            raise ConfigError(f"subject_kind must be 'person', 'pet' or 'object', not {subject_kind!r}.")
        # objects get the non-human ("pet") templates; the kind table is lensa_for_all.subjects
        self.subject_kind: SubjectKind = (subject_kind_for(self.subject_class) if subject_kind is None
                                          else "person" if subject_kind == "person" else "pet")
        cat = _as_catalogue(catalogue) if catalogue is not None else StyleCatalogue.default()
        if extra_catalogue is not None:
            cat = cat.merged(_as_catalogue(extra_catalogue))
        self.catalogue = cat
        self._tokenizer = tokenizer
        self._counter: TokenCounter | None = None
        self.magic_prompt = magic_model if isinstance(magic_model, MagicPrompt) else MagicPrompt(str(magic_model))
        self.default_styles = list(styles) if styles is not None else None
        self.default_magic: MagicMode = magic
        self.max_tokens = max_tokens
        if self.default_styles:
            self.catalogue.select(self.default_styles)  # fail early on a typo

    def __repr__(self) -> str:
        return (f"PromptGenerator(token={self.token!r}, subject_class={self.subject_class!r}, "
                f"styles={len(self.catalogue)}, magic={self.default_magic!r})")

    @property
    def subject(self) -> str:
        """The phrase every prompt contains exactly once."""
        return f"{self.token} {self.subject_class}"

    @property
    def has_tokenizer(self) -> bool:
        return self._tokenizer is not None

    def use_tokenizer(self, tokenizer: Any) -> None:
        """Count tokens with ``tokenizer`` from now on (an :class:`AvatarModel` passes its own)."""
        self._tokenizer = tokenizer
        self._counter = None

    def count_tokens(self, text: str) -> int:
        if self._counter is None:
            self._counter = token_counter_for(self._tokenizer)
        return self._counter(text)

    def styles(self) -> list[Style]:
        """The catalogue's styles, in order."""
        return list(self.catalogue)

    def prompt_for(self, style: Style | str) -> Prompt:
        """The template prompt of one style for this subject, fitted to the token window."""
        style = self.catalogue[style] if isinstance(style, str) else style
        text = style.template(self.subject_kind).replace(SUBJECT_PLACEHOLDER, self.subject)
        text = fit_prompt(text, self.subject, self.count_tokens, max_tokens=self.max_tokens)
        negative = fit_negative(self.catalogue.negative_for(style, self.subject_kind), self.count_tokens,
                                max_tokens=self.max_tokens)
        return Prompt(text, negative, style.name, style.settings)

    def generate(
        self,
        n: int = 40,
        *,
        styles: Iterable[str] | None = None,
        magic: MagicMode | None = None,
        seed: int | None = None,
    ) -> list[Prompt]:
        """``n`` prompts spread evenly over ``styles`` (style or group names; all when omitted).

        Styles are drawn in a seeded shuffled order, each used once before any repeats. With
        ``magic=True`` each prompt is expanded by MagicPrompt (:class:`MagicPromptUnavailable` if it
        cannot be loaded); ``magic="auto"`` falls back to the plain templates with a warning.
        """
        if n < 1:
            raise ConfigError(f"n must be at least 1, not {n}.")
        magic = self.default_magic if magic is None else magic
        if magic not in (True, False, "auto"):
            raise ConfigError(f"magic must be True, False or 'auto', not {magic!r}.")
        chosen = self.catalogue.select(styles if styles is not None else self.default_styles)
        rng = random.Random(seed)
        order: list[Style] = []
        while len(order) < n:
            round_ = list(chosen)
            rng.shuffle(round_)
            order.extend(round_)
        prompts = [self.prompt_for(s) for s in order[:n]]
        if magic is False:
            return prompts
        try:
            self.magic_prompt.load()
        except MagicPromptUnavailable as exc:
            if magic == "auto":
                warnings.warn(f"MagicPrompt unavailable, using the curated templates: {exc}", stacklevel=2)
                log.warning("MagicPrompt unavailable, using the curated templates: %s", exc)
                return prompts
            raise
        texts = self.magic_prompt.expand(
            [p.text for p in prompts], subject=self.subject, seed=rng.randrange(2**31),
            counter=self.count_tokens, max_tokens=self.max_tokens,
        )
        out = []
        for p, text in zip(prompts, texts, strict=True):
            if count_subject(text, self.subject) != 1:  # pragma: no cover - clean_continuation guarantees it
                text = p.text
            out.append(attrs.evolve(p, text=text))
        return out


def _as_catalogue(value: StyleCatalogue | str | os.PathLike[str]) -> StyleCatalogue:
    return value if isinstance(value, StyleCatalogue) else StyleCatalogue.from_file(value)
