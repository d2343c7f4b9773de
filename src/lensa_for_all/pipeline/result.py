"""What a run produced: the avatars, the model, and how long and how much each stage took."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .outputs import QC_REPORT

__all__ = ["PipelineResult"]


@attrs.frozen
class PipelineResult:
    """What a run produced: where the avatars are, the model, cost and how long each stage took.

    ``durations`` holds the seconds each stage took when it ran (for a reused stage, its earlier run);
    ``reused`` names the stages taken from an earlier run of the same inputs.
    """

    run_dir: Path
    out_dir: Path
    avatars: tuple[Path, ...]
    contact_sheet: Path | None
    model: str
    num_photos: int
    num_rejected: int
    durations: Mapping[str, float] = attrs.field(factory=dict)
    reused: tuple[str, ...] = ()
    backend: str = "local"
    job_name: str | None = None
    cost_usd: float | None = None

    @classmethod
    def from_stages(cls, run_dir: Path, out: Path, stages: Mapping[str, Mapping[str, Any]], *,
                    durations: Mapping[str, float], backend: str) -> PipelineResult:
        """The result of a run whose stages returned ``stages`` (stage name -> outputs, ``reused`` flag)."""
        photos, train, avatars = stages["photos"], stages["train"], stages["generate"]
        sheet = avatars.get("contact_sheet")
        return cls(run_dir=run_dir, out_dir=out, avatars=tuple(out / f for f in avatars["files"]),
                   contact_sheet=out / sheet if sheet else None, model=train["model"],
                   num_photos=int(photos["count"]), num_rejected=int(photos["rejected"]), durations=dict(durations),
                   reused=tuple(name for name, outputs in stages.items() if outputs["reused"]), backend=backend,
                   job_name=train.get("job_name"), cost_usd=train.get("cost_usd"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (the ``--json`` output of ``lensa-for-all run``)."""
        return {
            "run_dir": str(self.run_dir), "out_dir": str(self.out_dir), "avatars": [str(p) for p in self.avatars],
            "contact_sheet": str(self.contact_sheet) if self.contact_sheet else None, "model": self.model,
            "num_photos": self.num_photos, "num_rejected": self.num_rejected, "durations": dict(self.durations),
            "reused": list(self.reused), "backend": self.backend, "job_name": self.job_name,
            "cost_usd": self.cost_usd,
        }

    def summary(self) -> str:
        """A few lines for people: where everything is, how long it took, what it cost."""
        from .progress import STAGE_LABELS, duration_text

        sheet = f" (contact sheet: {self.contact_sheet})" if self.contact_sheet else ""
        lines = [f"Avatars: {len(self.avatars)} in {self.out_dir}{sheet}",
                 f"Model:   {self.model}",
                 f"Photos:  {self.num_photos} used, {self.num_rejected} rejected "
                 f"(report: {self.run_dir / QC_REPORT})"]
        times = [f"{STAGE_LABELS.get(s, s)} {duration_text(sec)}" + (" (reused)" if s in self.reused else "")
                 for s, sec in self.durations.items()]
        lines.append("Time:    " + ", ".join(times))
        if self.cost_usd is not None:
            lines.append(f"Cost:    ${self.cost_usd:.2f} on SageMaker (job {self.job_name})")
        elif self.backend == "sagemaker" and self.job_name:
            lines.append(f"Cost:    see the SageMaker console (job {self.job_name})")
        return "\n".join(lines)
