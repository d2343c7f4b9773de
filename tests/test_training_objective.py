"""What the loop optimises: the prior-preservation term (with its weight, on the class rows), and the LoRA rank
reaching both exports. Each test fails if the term is dropped, swapped with the instance term, or the rank ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training_helpers import make_subject_photos, tiny_config

INSTANCE_PRED, CLASS_PRED = 1.0, 3.0  # per-row squared errors: 1 for instance rows, 9 for class rows


class _Cache:
    """Latents of ``n`` images at 8x8 (all zero: the fake UNet decides the error)."""

    num_views = 1

    def __init__(self, n: int) -> None:
        self.num_images = n

    def dist(self, idx: Any, view: Any) -> tuple[Any, Any]:
        import torch

        return torch.zeros(len(idx), 4, 8, 8), torch.zeros(len(idx), 4, 8, 8)


def _unet(noisy: Any, timesteps: Any, hidden: Any, return_dict: bool = False) -> tuple[Any]:
    """Predicts INSTANCE_PRED on rows conditioned on the instance prompt (embedding 0), CLASS_PRED on the others."""
    import torch

    is_class = hidden[:, 0, 0].view(-1, 1, 1, 1)  # the class prompt's embedding is all ones
    return (torch.where(is_class > 0.5, torch.tensor(CLASS_PRED), torch.tensor(INSTANCE_PRED)) * torch.ones_like(noisy),)


def _loss(monkeypatch: pytest.MonkeyPatch, *, prior: bool, weight: float, bsz: int = 2) -> float:
    import torch

    from lensa_for_all.training import loop

    def zero_target(latents: Any, noise: Any, timesteps: Any, alphas_cumprod: Any, prediction_type: str) -> Any:
        return latents, torch.zeros_like(latents), torch.ones(latents.shape[0])

    monkeypatch.setattr(loop, "noisy_and_target", zero_target)
    cfg = tiny_config(Path("unused"), "lora", with_prior_preservation=prior, prior_loss_weight=weight, snr_gamma=None,
                      offset_noise=0.0)
    run = loop._Run(cfg, Path("i"), Path("o"), None, Path("c"), None, None, None)
    embeddings = torch.stack([torch.zeros(3, 5), torch.ones(3, 5)])  # row 0: instance prompt, row 1: class prompt
    loss = run._loss(_Cache(4), _Cache(4) if prior else None, loop._Sampler(4), loop._Sampler(4) if prior else None,
                     torch.Generator().manual_seed(0), bsz, "cpu", torch.float32, 1.0, None, torch.ones(10), 10,
                     "epsilon", _unet, None, None, embeddings)
    return float(loss)


@pytest.mark.parametrize("weight", [1.0, 0.5, 2.0])
def test_the_prior_term_is_the_class_rows_error_times_prior_loss_weight(monkeypatch: pytest.MonkeyPatch,
                                                                       weight: float) -> None:
    # instance error 1, class error 9: dropped gives 1, swapped gives weight*1 + 9
    assert _loss(monkeypatch, prior=True, weight=weight) == pytest.approx(INSTANCE_PRED**2 + weight * CLASS_PRED**2)


def test_without_prior_preservation_only_the_instance_error_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _loss(monkeypatch, prior=False, weight=1.0) == pytest.approx(INSTANCE_PRED**2)


def test_prior_loss_weight_changes_the_loss_in_proportion(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _loss(monkeypatch, prior=True, weight=0.0), _loss(monkeypatch, prior=True, weight=1.0)
    assert a == pytest.approx(INSTANCE_PRED**2) and b - a == pytest.approx(CLASS_PRED**2)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subject_photos(tmp_path_factory.mktemp("photos"))


def test_the_loop_feeds_the_class_images_to_the_loss(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from lensa_for_all.training import loop

    real = loop._Run._loss
    seen: list[tuple[Any, float]] = []

    def spy(self: Any, inst: Any, cls: Any, *args: Any, **kwargs: Any) -> Any:
        loss = real(self, inst, cls, *args, **kwargs)
        seen.append((cls, float(loss.detach())))
        return loss

    monkeypatch.setattr(loop._Run, "_loss", spy)
    cfg = tiny_config(tiny_sd, "lora", max_train_steps=2, train_text_encoder=False, num_class_images=3)
    assert cfg.with_prior_preservation
    metrics = loop.train(cfg, photos, tmp_path / "out", class_image_cache=tmp_path / "cache")
    assert len(seen) == 2 and all(cls is not None and cls.num_images == 3 for cls, _ in seen)
    assert metrics["num_class_images"] == 3


def test_a_rank_8_config_gives_rank_8_tensors_in_both_exports(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, max_train_steps=1, lora_rank=8)
    assert cfg.train_text_encoder
    train(cfg, photos, tmp_path / "out")
    ranks: dict[str, set[int]] = {}
    for name in ("pytorch_lora_weights.safetensors", "ohwx_lora_kohya.safetensors"):
        with safe_open(str(tmp_path / "out" / name), "pt") as f:
            keys = list(f.keys())
            downs = [k for k in keys if k.endswith(("down.weight", "lora_A.weight"))]
            ups = [k for k in keys if k.endswith(("up.weight", "lora_B.weight"))]
            assert any("unet" in k for k in downs) and any(k.startswith(("text_encoder", "lora_te")) for k in downs)
            assert len(downs) == len(ups) > 0, name
            ranks[name] = {f.get_slice(k).get_shape()[0] for k in downs} | {f.get_slice(k).get_shape()[1] for k in ups}
    assert ranks == {"pytorch_lora_weights.safetensors": {8}, "ohwx_lora_kohya.safetensors": {8}}
