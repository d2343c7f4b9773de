"""The pipeline: photos -> prepared training set -> trained model -> avatar pack, resumable in one run folder.

- :mod:`.run`: :class:`Pipeline`, the four stages (plan, photos, train, generate), and :class:`PipelineResult`.
- :mod:`.state`: the run folder's state file (finished stages, fingerprints, outputs).
- :mod:`.progress`: reporting a run's progress (rich, silent, or an app's own).
- :mod:`.plan`: the checks before any stage starts (``--dry-run``).
- :mod:`.settings`: run settings from a TOML file and ``LENSA_*`` variables (the CLI's).
"""

from __future__ import annotations

from .run import STAGES, Pipeline, PipelineResult

__all__ = ["Pipeline", "PipelineResult", "STAGES"]
