"""Which names hold secrets, and how to keep their values out of files, logs and resource descriptions.

A setting or environment variable is treated as secret when its name looks like one (``hf_token``,
``MY_PASSWD``, ``AWS_SECRET_ACCESS_KEY``, ``DB_PASS``, ``GITHUB_AUTH``, ``SERVICE_CREDENTIALS``...). The
list is deliberately broad: masking a harmless value costs nothing, writing a token to disk cannot be
undone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "SECRET_NAME_PARTS", "SECRETS_GIVEN", "is_secret_name", "mask_secrets", "without_secrets",
           "options_for_state", "options_from_state"]

MASK = "***"

SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "KEY", "CREDENTIAL", "AUTH",
                     "PRIVATE", "COOKIE", "SESSION", "SIGNATURE", "CERT")
"""Substrings of a name (any case) that make it secret."""

_SECRET_WORDS = frozenset({"PASS", "PWD", "PW", "PIN", "SALT"})
"""Whole words of a name (split on ``_``, ``-``, ``.`` and case changes) that make it secret."""

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

_NOT_SECRET = re.compile(r"(^|_)KMS_KEY(_ID|_ARN)?$", re.IGNORECASE)
"""Names that match the list but hold a public identifier a resumed run needs (a KMS key's id or ARN)."""

SECRETS_GIVEN = "secrets_given"
"""The key under which :func:`options_for_state` lists the secret names it left out."""


def is_secret_name(name: str) -> bool:
    """True if a setting or variable called ``name`` probably holds a secret."""
    upper = name.upper()
    if _NOT_SECRET.search(upper):
        return False
    if any(part in upper for part in SECRET_NAME_PARTS):
        return True
    return any(word.upper() in _SECRET_WORDS for word in _WORD_SPLIT.split(name) if word)


def mask_secrets(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with every secret-named value replaced by ``***`` (for logs and printing)."""
    return {k: (MASK if is_secret_name(str(k)) and v not in (None, "") else v) for k, v in values.items()}


def without_secrets(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``values`` less its secret-named entries, and the sorted names that were given (for a state file).

    What is written records *that* a secret was given, never its value; a resumed run reads it again
    from where it came from (the environment, e.g. ``HF_TOKEN``).
    """
    kept = {k: v for k, v in values.items() if not is_secret_name(str(k))}
    # only text is a secret to supply again; an object such as a boto3 session is just dropped
    given = sorted(str(k) for k, v in values.items() if is_secret_name(str(k)) and isinstance(v, (str, bytes)) and v)
    return kept, given


def options_for_state(options: Mapping[str, Any]) -> dict[str, Any]:
    """Backend options as a run-state file may hold them: secrets (top level and in ``environment``) left out.

    The names left out are listed under ``secrets_given`` (``environment.MY_PASSWD`` for a variable).
    """
    kept, given = without_secrets(options)
    env = kept.get("environment")
    if isinstance(env, Mapping):
        env_kept, env_given = without_secrets(env)
        kept["environment"] = env_kept
        given += [f"environment.{name}" for name in env_given]
    if given:
        kept[SECRETS_GIVEN] = given
    return kept


def options_from_state(recorded: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The inverse of :func:`options_for_state`: the options to rebuild with, and the secrets to supply again."""
    options = {k: v for k, v in recorded.items() if k != SECRETS_GIVEN}
    given = recorded.get(SECRETS_GIVEN) or []
    return options, [str(n) for n in given] if isinstance(given, list) else []
