"""AvatarModel's CUDA path on the tiny model: fp16 without NaNs or black images, fused SDPA attention.

Marked ``gpu``: skipped without CUDA (tests/conftest.py). ``benchmarks/gpu_acceptance.py`` runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_helpers import FUSED_SDPA, unet_attention_ops
from lensa_for_all.generation import AvatarModel

pytestmark = pytest.mark.gpu

PROMPTS = ["a photo of ohwx person, portrait", "ohwx person as a knight, detailed armor"]


def _finite_outputs(module: Any, seen: list[bool]) -> Any:
    import torch

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        tensor = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        seen.append(bool(torch.isfinite(tensor).all()))

    return module.register_forward_hook(hook)


@pytest.mark.parametrize("scheduler", [None, "euler_a"])
def test_fp16_generation_has_no_nan_and_no_black_images(tiny_sd: Path, scheduler: str | None) -> None:
    import torch

    model = AvatarModel.load(tiny_sd)
    runner: Any = model.runner
    assert runner.device.kind == "cuda" and runner.device.dtype == torch.float16
    pipe = runner.pipe
    assert pipe.unet.dtype == torch.float16 and pipe.unet.device.type == "cuda"
    unet_ok: list[bool] = []
    vae_ok: list[bool] = []
    handles = [_finite_outputs(pipe.unet, unet_ok), _finite_outputs(pipe.vae.decoder, vae_ok)]
    try:
        pack = model.generate(PROMPTS * 2, seed=11, num_inference_steps=6, guidance_scale=7.5, scheduler=scheduler,
                              height=128, width=128)
    finally:
        for h in handles:
            h.remove()
    assert unet_ok and all(unet_ok), "the fp16 UNet produced NaN/inf"
    assert vae_ok and all(vae_ok), "the fp16 VAE decoder produced NaN/inf"
    assert len(pack) == 4
    for avatar in pack:
        px = np.asarray(avatar.image.convert("RGB"), dtype=np.float64)
        assert avatar.image.size == (128, 128)
        assert px.max() > 0, "a black image: NaN latents decode to zeros"
        assert px.std() > 2.0 and len(np.unique(px.reshape(-1, 3), axis=0)) > 16


def test_generation_attention_uses_a_fused_sdpa_kernel(tiny_sd: Path) -> None:
    model = AvatarModel.load(tiny_sd)
    model.generate(PROMPTS[:1], seed=0, num_inference_steps=2)  # warm-up outside the profile
    ops = unet_attention_ops(lambda: model.generate(PROMPTS, seed=0, num_inference_steps=2))
    assert any(k in op for op in ops for k in FUSED_SDPA), ops
    assert not any("math" in op for op in ops), ops
