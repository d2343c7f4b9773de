"""The pipeline: photos -> prepared training set -> trained model -> avatar pack, resumable in one run folder.

- ``pipeline.run``: ``Pipeline``, whose ``run`` is the four stages: plan, photos, train, generate.
- ``pipeline.request``: ``RunRequest``, the checked arguments of ``run`` and ``plan``.
- ``pipeline.result``: ``PipelineResult``, what a run produced.
- ``pipeline.state``: the run folder's state file (finished stages, their input fingerprints, outputs).
- ``pipeline.outputs``: the run folder's layout; what a stage left there and whether it is intact.
- ``pipeline.rendering``: the generate stage's resumable loop (each avatar recorded as it lands).
- ``pipeline.prompt_source``: a run's prompts (catalogue, a ``PromptGenerator`` or a list) and their record.
- ``pipeline.progress``: reporting a run's progress (rich, silent, or an app's own ``RunProgress``).
- ``pipeline.plan``: the checks before any stage starts (``Pipeline.plan``, ``run --dry-run``).
- ``pipeline.settings``: run settings from a TOML file and ``LENSA_*`` variables (the CLI's).
"""

from __future__ import annotations

from .result import PipelineResult
from .run import STAGES, Pipeline

__all__ = ["Pipeline", "PipelineResult", "STAGES"]
