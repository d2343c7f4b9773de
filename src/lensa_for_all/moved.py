"""Old module paths kept for one release after their modules moved (0.2.0); importing one warns.

An old path is a two-line module that calls :func:`alias`: it warns with a ``DeprecationWarning`` that
names the new home, then *becomes* the new module (``sys.modules``), so every name, private ones included,
and every monkeypatch through the old path reach the one real module. ``tests/test_layers.py`` checks that
each entry here is such a module and that the library itself never imports an old path.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED", "REMOVED_IN", "alias", "warn_moved"]

REMOVED_IN = "0.3.0"

# old module path -> its home since 0.2.0
MOVED: dict[str, str] = {
    "lensa_for_all.trainer": "lensa_for_all.training.trainer",
    "lensa_for_all.backends.local": "lensa_for_all.training.local",
    "lensa_for_all.backends.job_player": "lensa_for_all.testing.sagemaker",
    "lensa_for_all.backends.inference": "lensa_for_all.generation.endpoint_handler",
    "lensa_for_all.run_state": "lensa_for_all.pipeline.state",
    "lensa_for_all.run_progress": "lensa_for_all.pipeline.progress",
    "lensa_for_all.settings": "lensa_for_all.pipeline.settings",
    "lensa_for_all.plan": "lensa_for_all.pipeline.plan",
}

# old paths whose contents went to more than one module: they re-export names instead of aliasing a module
SPLIT: dict[str, tuple[str, ...]] = {
    "lensa_for_all.backends.base": ("lensa_for_all.training.backend", "lensa_for_all.training.progress"),
}


def _caller_stacklevel() -> int:
    """The stack level of the first frame outside the import machinery, this module and the old module.

    ``warnings`` itself does not count the import machinery's frames, so neither does this.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        internal = "importlib" in frame.f_code.co_filename and "_bootstrap" in frame.f_code.co_filename
        module = frame.f_globals.get("__name__", "")
        if not (internal or module == __name__ or module in MOVED or module in SPLIT):
            return level
        frame = frame.f_back  # type: ignore[assignment]
        level += 0 if internal else 1
    return 2


def warn_moved(old: str) -> None:
    """Warn that ``old`` moved, pointing at the line that imported it."""
    new = MOVED.get(old) or " and ".join(SPLIT[old])
    warnings.warn(f"{old} moved to {new} in lensa-for-all 0.2.0; the old path goes in {REMOVED_IN}. "
                  f"Import from {new}.", DeprecationWarning, stacklevel=_caller_stacklevel())


def alias(old: str) -> ModuleType:
    """Make the module being imported as ``old`` the module at its new home (called from the old file)."""
    warn_moved(old)
    module = importlib.import_module(MOVED[old])
    sys.modules[old] = module
    return module
