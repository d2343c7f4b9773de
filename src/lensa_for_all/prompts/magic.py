"""MagicPrompt: GPT-2 expansion of a style prompt, cleaned so it is safe to feed to Stable Diffusion.

A causal language model fine-tuned on Stable Diffusion prompts continues our template with extra
style words. Its raw output is noisy, so every continuation is post-processed: cut into fragments,
junk and duplicates dropped, fragments touching the subject or a banned word dropped, and fragments
added only while the whole prompt fits CLIP's 77-token window. The subject phrase therefore stays
exactly once and unaltered, whatever the model wrote.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import MagicPromptUnavailable
from .tokens import CLIP_MAX_TOKENS, TokenCounter, approximate_token_count, count_subject, split_fragments

__all__ = ["DEFAULT_MAGIC_MODEL", "DEFAULT_BANNED_WORDS", "MagicPrompt", "clean_continuation", "hub_unreachable"]

log = logging.getLogger(__name__)

DEFAULT_MAGIC_MODEL = "Gustavosta/MagicPrompt-Stable-Diffusion"

# Words that must never reach the image model from an automatic expansion (NSFW and gore terms).
DEFAULT_BANNED_WORDS: tuple[str, ...] = (
    "nsfw", "nude", "nudity", "naked", "topless", "nipple", "nipples", "erotic", "sexy", "sex", "porn",
    "lingerie", "underwear", "bikini", "cleavage", "fetish", "gore", "gory", "blood", "bloody", "corpse",
    "dead", "decapitated",
)

_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_HANDLE = re.compile(r"[@#]\w+")
_WEIGHTS = re.compile(r"[()\[\]{}<>|:;=_*~^\\\"`]+")
_NOT_PROMPT = re.compile(r"[^A-Za-z0-9 '\-.]")
# a plausible prompt word: letters, or a number with a unit ("8k", "35mm", "1920s", "3d")
_GOOD_WORD = re.compile(r"^(?:[A-Za-z][A-Za-z'\-]{0,17}|\d{1,4}(?:[a-z]{1,3})?|\d+\.\d+)$")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z]")


def _clean_fragment(fragment: str) -> str:
    fragment = _URL.sub(" ", fragment)
    fragment = _HANDLE.sub(" ", fragment)
    fragment = _WEIGHTS.sub(" ", fragment)
    fragment = _NOT_PROMPT.sub(" ", fragment)
    fragment = _SPACES.sub(" ", fragment).strip(" .-'!?/&+")
    return fragment


def _is_junk(fragment: str) -> bool:
    letters = len(_WORD.findall(fragment))
    words = fragment.split()
    return (letters == 0 or len(fragment) < 2 or letters < len(fragment.replace(" ", "")) * 0.5 or len(words) > 8
            or not all(_GOOD_WORD.match(w.strip(".")) for w in words))


def _banned_in(fragment: str, banned: Iterable[str]) -> bool:
    low = fragment.lower()
    return any(re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", low) for w in banned)


def hub_unreachable() -> bool:
    """True when the Hub is switched off or does not answer within 3 s (saves minutes of retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=3):
            return False
    except OSError:
        return True


def clean_continuation(
    base: str,
    continuation: str,
    *,
    subject: str,
    counter: TokenCounter = approximate_token_count,
    banned_words: Iterable[str] = DEFAULT_BANNED_WORDS,
    max_tokens: int = CLIP_MAX_TOKENS,
) -> str:
    """``base`` plus the usable fragments of ``continuation``, within ``max_tokens``.

    ``base`` (which holds ``subject`` exactly once) is kept as is; a continuation fragment is dropped
    if it is junk, a duplicate, mentions the subject's token or class, or holds a banned word.
    """
    banned = [w.lower() for w in banned_words]
    seen = {f.lower() for f in split_fragments(base)}
    subject_words = {w.lower() for w in subject.split()}
    text = base
    continuation = continuation.split("\n", 1)[0]
    for raw in continuation.split(","):
        frag = _clean_fragment(raw)
        if not frag or _is_junk(frag) or frag.lower() in seen:
            continue
        if subject_words & {w.lower() for w in re.findall(r"[A-Za-z0-9]+", frag)}:
            continue  # would repeat or alter the subject
        if _banned_in(frag, banned):
            continue
        trial = f"{text}, {frag}"
        if counter(trial) > max_tokens:
            continue  # a shorter later fragment may still fit
        text = trial
        seen.add(frag.lower())
    return text


class MagicPrompt:
    """Expands prompts with a causal LM (MagicPrompt by default), loaded on first use.

    ``model`` is a Hub id or a local folder. Offline with no cached copy, :meth:`load` raises
    :class:`MagicPromptUnavailable` saying how to get one.
    """

    def __init__(
        self,
        model: str = DEFAULT_MAGIC_MODEL,
        *,
        revision: str | None = None,
        device: str | None = None,
        max_new_tokens: int = 48,
        temperature: float = 0.9,
        top_k: int = 50,
        banned_words: Iterable[str] = DEFAULT_BANNED_WORDS,
        batch_size: int = 8,
        allow_pickle: bool = False,
    ) -> None:
        self.model_id = str(model)
        self.revision = revision
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.banned_words = tuple(banned_words)
        self.batch_size = max(1, batch_size)
        self.allow_pickle = allow_pickle
        self._model: Any = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return f"MagicPrompt({self.model_id!r})"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> MagicPrompt:
        """Load the model and tokenizer (cached after the first call)."""
        if self._model is not None:
            return self
        try:
            tokenizer, model = self._from_pretrained(local_files_only=True)
        except Exception as local_exc:  # not cached: download it, unless we know that cannot work
            if Path(self.model_id).is_dir() or hub_unreachable():
                raise self._unavailable(local_exc) from local_exc
            try:
                tokenizer, model = self._from_pretrained(local_files_only=False)
            except Exception as exc:  # offline, missing, gated or pickle-only: all mean "not usable here"
                raise self._unavailable(exc) from exc
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        if self.device:
            model.to(self.device)
        self._tokenizer, self._model = tokenizer, model
        return self

    def _from_pretrained(self, *, local_files_only: bool) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"revision": self.revision, "local_files_only": local_files_only}
        tokenizer = AutoTokenizer.from_pretrained(self.model_id, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            self.model_id, use_safetensors=None if self.allow_pickle else True, **kwargs
        )
        return tokenizer, model

    def _unavailable(self, exc: BaseException) -> MagicPromptUnavailable:
        if "safetensors" in str(exc).lower() and not self.allow_pickle:
            return MagicPromptUnavailable(
                f"The MagicPrompt model {self.model_id!r} has no safetensors weights. Pass "
                "MagicPrompt(..., allow_pickle=True) only if you trust it, or use magic='auto'/False."
            )
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return MagicPromptUnavailable(
            f"The MagicPrompt model {self.model_id!r} is not in the local cache and could not be "
            "downloaded (offline?). Connect once so it is cached, pass a local folder as the magic "
            f"model, or use magic='auto' to fall back to the curated templates. Cause: {cause}"
        )

    def continuations(self, prompts: Sequence[str], *, seed: int) -> list[str]:
        """The raw text each prompt is continued with (sampling seeded by ``seed``)."""
        import torch

        self.load()
        tok: Any = self._tokenizer
        model: Any = self._model
        out: list[str] = []
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            for start in range(0, len(prompts), self.batch_size):
                batch = [p + "," for p in prompts[start:start + self.batch_size]]
                enc = tok(batch, return_tensors="pt", padding=True).to(model.device)
                gen = model.generate(
                    **enc, do_sample=True, temperature=self.temperature, top_k=self.top_k,
                    max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
                new = gen[:, enc["input_ids"].shape[1]:]
                out.extend(tok.batch_decode(new, skip_special_tokens=True))
        return out

    def expand(self, prompts: Sequence[str], *, subject: str, seed: int,
               counter: TokenCounter = approximate_token_count,
               max_tokens: int = CLIP_MAX_TOKENS) -> list[str]:
        """Each prompt with cleaned extra style words; the subject stays exactly once and unaltered."""
        for p in prompts:
            if count_subject(p, subject) != 1:
                raise ValueError(f"prompt must contain {subject!r} exactly once: {p!r}")
        raw = self.continuations(prompts, seed=seed)
        result = []
        for base, cont in zip(prompts, raw, strict=True):
            text = clean_continuation(base, cont, subject=subject, counter=counter,
                                      banned_words=self.banned_words, max_tokens=max_tokens)
            log.debug("MagicPrompt %r -> %r", cont, text)
            result.append(text)
        return result
