"""Where a run's prompts come from: the style catalogue, the caller's ``PromptGenerator``, or the caller's list.

The run state records which (:func:`prompt_fingerprint`), so changed prompts render the avatars again, and
a listed prompt is stored as a dict (:func:`prompt_from_dict` reads it back on resume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..prompts import Prompt

__all__ = ["choose_prompts", "prompt_fingerprint", "prompt_from_dict", "listed_prompts"]


def _is_generator(prompts: Any) -> bool:
    return hasattr(prompts, "generate")


def listed_prompts(prompts: Any) -> list[Any] | None:
    """The caller's own prompts as the run state stores them (``None`` for the catalogue or a generator)."""
    if prompts is None or _is_generator(prompts):
        return None
    return [p.to_dict() if hasattr(p, "to_dict") else str(p) for p in prompts]


def prompt_fingerprint(prompts: Any, recorded: Any = None) -> Any:
    """What identifies the prompts: ``"catalogue"``, a generator's settings, or the listed prompts.

    ``recorded`` is the fingerprint of a generator an earlier run used (a resumed run cannot rebuild it).
    """
    if prompts is None:
        return recorded if recorded is not None else "catalogue"
    if _is_generator(prompts):
        return {"token": prompts.token, "subject_class": prompts.subject_class,
                "styles": [s.name for s in prompts.styles()], "magic": repr(prompts.default_magic)}
    return listed_prompts(prompts)


def prompt_from_dict(data: Mapping[str, Any]) -> Prompt:
    from ..prompts import Prompt

    return Prompt(data["text"], data.get("negative", ""), data.get("style"), data.get("settings") or {})


def choose_prompts(prompts: Any, model: Any, num_images: int, *, styles: Sequence[str] | None,
                   magic: bool | str, seed: int, subject_kind: str | None) -> list[Prompt]:
    """The prompts of ``num_images`` avatars: the caller's list as given, else ``num_images`` from a generator
    (the caller's, or the catalogue's for the trained ``model``'s subject) in ``styles``."""
    from ..prompts import Prompt

    if prompts is None:
        generator = model.prompt_generator(**({"subject_kind": subject_kind} if subject_kind else {}))
    elif _is_generator(prompts):
        generator = prompts
        if not generator.has_tokenizer and getattr(model.runner, "tokenizer", None) is not None:
            generator.use_tokenizer(model.runner.tokenizer)
    else:
        if styles:
            raise ConfigError("styles apply to the style catalogue; they cannot be combined with your own prompts")
        listed = [p if isinstance(p, Prompt) else Prompt(str(p)) for p in prompts]
        if not listed:
            raise ConfigError("No prompts given.")
        return listed
    return list(generator.generate(num_images, styles=styles, magic=magic, seed=seed))
