"""Prompts for avatar packs: the curated style catalogue, the generator and MagicPrompt expansion."""

from __future__ import annotations

from .catalogue import Style, StyleCatalogue, subject_kind_for
from .generator import Prompt, PromptGenerator
from .magic import DEFAULT_MAGIC_MODEL, MagicPrompt

__all__ = ["Prompt", "PromptGenerator", "Style", "StyleCatalogue", "MagicPrompt", "DEFAULT_MAGIC_MODEL",
           "subject_kind_for"]
