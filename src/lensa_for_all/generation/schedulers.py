"""Schedulers (samplers) by short name, and their AUTOMATIC1111 names for image metadata.

A scheduler is always built from the loaded model's own scheduler config, so the model's training
choices (``prediction_type`` for v-prediction SD 2.x, beta schedule, timestep spacing) carry over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ConfigError

__all__ = ["DEFAULT_SCHEDULER", "SchedulerSpec", "SCHEDULERS", "scheduler_names", "make_scheduler",
           "a1111_name", "from_a1111_name"]

DEFAULT_SCHEDULER = "dpmpp_2m_karras"


@attrs.frozen
class SchedulerSpec:
    """A diffusers scheduler class and the config overrides that make it the named sampler."""

    class_name: str
    a1111: str
    overrides: Mapping[str, Any] = attrs.field(factory=dict)
    default_steps: int = 25


SCHEDULERS: dict[str, SchedulerSpec] = {
    "dpmpp_2m_karras": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M Karras",
                                     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpmpp_2m": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M",
                              {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler", "Euler a", {}, 30),
    "euler": SchedulerSpec("EulerDiscreteScheduler", "Euler", {"use_karras_sigmas": False}, 30),
    "heun": SchedulerSpec("HeunDiscreteScheduler", "Heun", {}, 20),
    "lms": SchedulerSpec("LMSDiscreteScheduler", "LMS", {}, 40),
    "ddim": SchedulerSpec("DDIMScheduler", "DDIM", {}, 40),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", "UniPC", {}, 20),
    "pndm": SchedulerSpec("PNDMScheduler", "PLMS", {"skip_prk_steps": True}, 50),
}


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def _spec(name: str) -> SchedulerSpec:
    return SCHEDULERS[canonical_name(name)]


def canonical_name(name: str) -> str:
    """The short name for ``name`` (accepts A1111 names like ``"DPM++ 2M Karras"`` too)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_").replace("+", "p")
    if key in SCHEDULERS:
        return key
    for short, spec in SCHEDULERS.items():
        if spec.a1111.lower() == name.strip().lower():
            return short
    raise ConfigError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")


def make_scheduler(name: str, base_config: Mapping[str, Any]) -> Any:
    """A new scheduler ``name`` configured from ``base_config`` (the model's own scheduler config)."""
    import diffusers

    spec = _spec(name)
    cls = getattr(diffusers, spec.class_name)
    return cls.from_config(dict(base_config), **spec.overrides)


def a1111_name(name: str) -> str:
    return _spec(name).a1111


def from_a1111_name(sampler: str, schedule_type: str | None = None) -> str:
    """The short name for an A1111 ``Sampler`` (and newer ``Schedule type``) value."""
    wanted = sampler.strip()
    if schedule_type and schedule_type.strip().lower() == "karras" and not wanted.endswith("Karras"):
        wanted += " Karras"
    for key, spec in SCHEDULERS.items():
        if spec.a1111.lower() == wanted.lower():
            return key
    raise ConfigError(f"Unknown sampler {sampler!r}; known: {', '.join(s.a1111 for s in SCHEDULERS.values())}.")
