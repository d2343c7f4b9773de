"""The training loop's CUDA-only paths on the tiny model: mixed precision with cached latents, 8-bit Adam,
gradient checkpointing, SDPA attention, bit-identical bf16 resume and the two-GPU ``accelerate launch``.

All marked ``gpu``: skipped without CUDA (tests/conftest.py). ``benchmarks/gpu_acceptance.py`` runs them.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from gpu_helpers import FUSED_SDPA, unet_attention_ops
from lensa_for_all.training.progress import TrainingProgress
from training_helpers import make_subject_photos, tiny_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subject_photos(tmp_path_factory.mktemp("photos") / "subject")


def _losses(out: Path) -> list[float]:
    return [float(x) for x in json.loads((out / "metrics.json").read_text())["losses"]]


def _needs_bf16(precision: str) -> None:
    import torch

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")


@pytest.fixture
def optimizers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every optimizer the loop builds, as built (before accelerate wraps it)."""
    from lensa_for_all.training import loop

    made: list[Any] = []
    build = loop._make_optimizer

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(build(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(loop, "_make_optimizer", recording)
    return made


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_full_fine_tuning_loss_is_finite_and_falls(precision: str, tiny_sd: Path, photos: Path,
                                                   tmp_path: Path) -> None:
    from lensa_for_all.training.loop import train

    _needs_bf16(precision)
    cfg = tiny_config(tiny_sd, "full", mixed_precision=precision, cache_latents=True, with_prior_preservation=False,
                      train_text_encoder=False, max_train_steps=40, learning_rate=1e-3, random_flip=False)
    metrics = train(cfg, photos, tmp_path / "out", checkpoint_dir=tmp_path / "ck")
    losses = _losses(tmp_path / "out")
    assert metrics["mixed_precision"] == precision and len(losses) == 40
    assert all(math.isfinite(x) for x in losses)
    first, last = statistics.fmean(losses[:8]), statistics.fmean(losses[-8:])
    assert last < 0.5 * first, (first, last)  # fp32 on CPU: 0.66 -> 0.17


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_lora_in_half_precision_trains_float32_adapters(precision: str, tiny_sd: Path, photos: Path,
                                                        tmp_path: Path, optimizers: list[Any]) -> None:
    """The UNet runs in fp16/bf16; the adapters the optimizer updates stay float32 (fp16 grad scaling needs it)."""
    import torch
    from safetensors.torch import load_file

    from lensa_for_all.training.loop import train

    _needs_bf16(precision)
    cfg = tiny_config(tiny_sd, "lora", mixed_precision=precision, cache_latents=True, with_prior_preservation=False,
                      train_text_encoder=False, max_train_steps=40, learning_rate=2e-2, lora_rank=16,
                      random_flip=False)
    metrics = train(cfg, photos, tmp_path / "out", checkpoint_dir=tmp_path / "ck")
    losses = _losses(tmp_path / "out")
    assert metrics["mixed_precision"] == precision and all(math.isfinite(x) for x in losses)
    # LoRA on the tiny model learns slowly (fp32 on CPU: 1.07 -> 1.01 over these steps), but it does learn
    assert statistics.fmean(losses[-8:]) < statistics.fmean(losses[:8])
    params = [p for g in optimizers[0].param_groups for p in g["params"]]
    assert params and {p.dtype for p in params} == {torch.float32} and {p.device.type for p in params} == {"cuda"}
    weights = load_file(str(tmp_path / "out" / "pytorch_lora_weights.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    ups = [w for k, w in weights.items() if "lora_B" in k or ".up." in k]
    assert ups and any(bool(w.abs().sum() > 0) for w in ups)  # B starts at zero: it moved


def test_8bit_adam_keeps_8bit_state(tiny_sd: Path, photos: Path, tmp_path: Path, optimizers: list[Any]) -> None:
    import torch

    bnb = pytest.importorskip("bitsandbytes", reason="8-bit Adam needs bitsandbytes (scripts/gpu_wheels.sh carries it)")
    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "full", mixed_precision="bf16" if torch.cuda.is_bf16_supported() else "fp16",
                      use_8bit_adam=True, with_prior_preservation=False, train_text_encoder=False, max_train_steps=3)
    metrics = train(cfg, photos, tmp_path / "out", checkpoint_dir=tmp_path / "ck")
    assert math.isfinite(metrics["final_loss"])
    opt = optimizers[0]
    assert isinstance(opt, bnb.optim.AdamW8bit)
    # bitsandbytes keeps float32 state for tensors under 4096 elements; everything larger is 8-bit
    big = [p for g in opt.param_groups for p in g["params"] if p.numel() >= 4096]
    assert len(big) >= 10
    for p in big:
        state = opt.state[p]
        assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
        assert state["state1"].numel() == p.numel()
    # two 1-byte moments plus a float32 scale per 256-element block (the quantisation maps are shared)
    state_bytes = sum(opt.state[p][k].numel() * opt.state[p][k].element_size() for p in big
                      for k in ("state1", "state2", "absmax1", "absmax2") if k in opt.state[p])
    assert state_bytes < 0.3 * sum(8 * p.numel() for p in big)  # fp32 AdamW: two 4-byte moments


def test_gradient_checkpointing_recomputes_the_unet(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.checkpoint as ckpt

    from lensa_for_all.training.loop import train

    calls: list[int] = []
    real = ckpt.checkpoint

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "checkpoint", counting)
    counts = {}
    for on in (True, False):
        calls.clear()
        cfg = tiny_config(tiny_sd, "lora", mixed_precision="fp16", gradient_checkpointing=on,
                          with_prior_preservation=False, train_text_encoder=True, max_train_steps=2)
        metrics = train(cfg, photos, tmp_path / f"out-{on}", checkpoint_dir=tmp_path / f"ck-{on}")
        assert math.isfinite(metrics["final_loss"])
        counts[on] = len(calls)
    # with it on, every UNet block (and text-encoder layer) is checkpointed at each step; off, none
    assert counts[True] >= 2 * 4 and counts[False] == 0, counts


def test_training_attention_uses_a_fused_sdpa_kernel(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", mixed_precision="fp16", with_prior_preservation=False,
                      train_text_encoder=False, max_train_steps=2)
    ops = unet_attention_ops(lambda: train(cfg, photos, tmp_path / "out", checkpoint_dir=tmp_path / "ck"))
    assert any(k in op for op in ops for k in FUSED_SDPA), ops
    assert not any("math" in op for op in ops), ops


def test_bf16_resume_is_bit_identical(tiny_sd: Path, photos: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted at step 5 and resumed from the step-4 checkpoint: the same weights and losses, in bf16.

    cuDNN's autotuned convolutions and the fused attention kernels' backward passes accumulate with
    atomics, so two uninterrupted CUDA runs can differ in the last bit already; those are pinned to
    their deterministic choices here so that what is tested is the resume, not the kernels.
    """
    import torch
    from safetensors.torch import load_file
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lensa_for_all.training.loop import train

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    cfg = tiny_config(tiny_sd, "lora", mixed_precision="bf16", max_train_steps=8, checkpointing_steps=2,
                      lr_scheduler="cosine", lr_warmup_steps=2, learning_rate=1e-3, lora_dropout=0.1)
    assert cfg.with_prior_preservation and cfg.train_text_encoder
    cache = tmp_path / "class-cache"

    def interrupt(p: TrainingProgress) -> None:
        if p.stage == "train" and p.step == 5:
            raise KeyboardInterrupt

    with sdpa_kernel(SDPBackend.MATH):
        train(cfg, photos, tmp_path / "a" / "out", checkpoint_dir=tmp_path / "a" / "ck", class_image_cache=cache)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, photos, tmp_path / "b" / "out", checkpoint_dir=tmp_path / "b" / "ck", class_image_cache=cache,
                  progress=interrupt)
        metrics = train(cfg, photos, tmp_path / "b" / "out", checkpoint_dir=tmp_path / "b" / "ck",
                        class_image_cache=cache)
    assert metrics["resumed_from"].endswith("checkpoint-000004") and metrics["mixed_precision"] == "bf16"
    a = load_file(str(tmp_path / "a" / "out" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "out" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("text_encoder.") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _losses(tmp_path / "a" / "out") == _losses(tmp_path / "b" / "out")


def test_two_gpus_train_through_accelerate_launch(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    """LocalBackend on a 2-GPU machine: ``accelerate launch --multi_gpu``, two NCCL ranks, one set of artifacts."""
    import torch

    from lensa_for_all.training.local import LocalBackend
    from lensa_for_all.training.trainer import DreamBoothTrainer

    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs; this machine has {torch.cuda.device_count()}")
    cfg = tiny_config(tiny_sd, "lora", mixed_precision="fp16", max_train_steps=3)
    backend = LocalBackend(num_gpus=2, work_dir=tmp_path / "work",
                           env={"LENSA_CLASS_IMAGE_CACHE": str(tmp_path / "cache"), "NCCL_DEBUG": "INFO"})
    result = DreamBoothTrainer(cfg, backend=backend).train(photos, output_dir=tmp_path / "model")
    assert result.metrics["steps"] == 3
    assert (tmp_path / "model" / "pytorch_lora_weights.safetensors").is_file()
    assert result.log_path is not None
    log = result.log_path.read_text(errors="replace").lower()
    assert "nranks 2" in log, log[-2000:]  # NCCL_DEBUG=INFO: both ranks joined one communicator
