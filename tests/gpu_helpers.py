"""Helpers for the gpu-marked tests: which attention kernel the UNet runs."""

from __future__ import annotations

from typing import Any

import pytest


def unet_attention_ops(run: Any) -> set[str]:
    """The aten scaled-dot-product kernels the UNet's forward dispatches while ``run()`` executes.

    Only calls inside ``UNet2DConditionModel.forward`` count: CLIP's masked attention in the text encoder
    may use another kernel, and a fused forward kernel implies its fused backward.
    """
    from diffusers import UNet2DConditionModel
    from torch.profiler import ProfilerActivity, profile, record_function

    label = "lensa-test-unet-forward"
    forward = UNet2DConditionModel.forward

    def labelled(self: Any, *args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return forward(self, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(UNet2DConditionModel, "forward", labelled)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    finally:
        mp.undo()
    events = list(prof.events())
    spans = [(e.thread, e.time_range.start, e.time_range.end) for e in events if e.name == label]
    assert spans, "the UNet never ran"
    return {e.name for e in events if "scaled_dot_product" in e.name
            and any(t == e.thread and s <= e.time_range.start and e.time_range.end <= f for t, s, f in spans)}


FUSED_SDPA = ("flash", "efficient", "cudnn")
