"""The training loop in-process on the tiny model: learning, bit-for-bit resume, v-prediction, class images,
early stopping, LoRA exports and the errors a user can cause."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from lensa_for_all.errors import ModelNotFoundError, PhotoSetError
from lensa_for_all.training.progress import TrainingProgress
from training_helpers import make_subject_photos, tiny_config


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subject_photos(tmp_path_factory.mktemp("photos") / "subject")


def _losses(out: Path) -> list[float]:
    return [float(x) for x in json.loads((out / "metrics.json").read_text())["losses"]]


@pytest.mark.slow
def test_loss_falls_clearly_over_a_few_dozen_steps(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "full", with_prior_preservation=False, train_text_encoder=False,
                      max_train_steps=40, learning_rate=1e-3, random_flip=False)
    metrics = train(cfg, photos, tmp_path / "out", checkpoint_dir=tmp_path / "ck")
    losses = _losses(tmp_path / "out")
    assert len(losses) == 40 and metrics["steps"] == 40
    first, last = statistics.fmean(losses[:8]), statistics.fmean(losses[-8:])
    assert last < 0.5 * first, (first, last)
    assert metrics["final_loss"] < metrics["initial_loss"]


@pytest.mark.slow
def test_interrupt_and_resume_gives_identical_weights(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    """LoRA on UNet and text encoder, prior preservation, dropout, warm-up + cosine: all of it resumes exactly."""
    from safetensors.torch import load_file

    from lensa_for_all.training.checkpoints import list_checkpoints
    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", max_train_steps=8, checkpointing_steps=2, checkpoints_total_limit=2,
                      lr_scheduler="cosine", lr_warmup_steps=2, learning_rate=1e-3, lora_dropout=0.1)
    assert cfg.with_prior_preservation and cfg.train_text_encoder
    cache = tmp_path / "class-cache"
    train(cfg, photos, tmp_path / "a" / "out", checkpoint_dir=tmp_path / "a" / "ck", class_image_cache=cache)

    def interrupt(p: TrainingProgress) -> None:
        if p.stage == "train" and p.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, photos, tmp_path / "b" / "out", checkpoint_dir=tmp_path / "b" / "ck", class_image_cache=cache,
              progress=interrupt)
    kept = [p.name for p in list_checkpoints(tmp_path / "b" / "ck")]
    assert kept == ["checkpoint-000002", "checkpoint-000004"]  # total limit 2
    assert not (tmp_path / "b" / "out" / "pytorch_lora_weights.safetensors").exists()
    metrics = train(cfg, photos, tmp_path / "b" / "out", checkpoint_dir=tmp_path / "b" / "ck",
                    class_image_cache=cache)
    assert metrics["resumed_from"].endswith("checkpoint-000004")

    a = load_file(str(tmp_path / "a" / "out" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "out" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("text_encoder.") for k in a)
    assert all(bool((a[k] == b[k]).all()) for k in a)
    assert _losses(tmp_path / "a" / "out") == _losses(tmp_path / "b" / "out")


def test_noisy_sample_and_targets_match_the_scheduler() -> None:
    import torch
    from diffusers import DDPMScheduler

    from lensa_for_all.training.loop import noisy_and_target

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([1, 500, 999])
    noisy, eps_target, _ = noisy_and_target(latents, noise, t, sched.alphas_cumprod, "epsilon")
    torch.testing.assert_close(noisy, sched.add_noise(latents, noise, t))
    assert eps_target is noise
    _, v_target, _ = noisy_and_target(latents, noise, t, sched.alphas_cumprod, "v_prediction")
    torch.testing.assert_close(v_target, sched.get_velocity(latents, noise, t))


def test_v_prediction_model_trains(tiny_sd_v: Path, photos: Path, tmp_path: Path) -> None:
    import math

    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd_v, "lora", with_prior_preservation=False, train_text_encoder=True, max_train_steps=3,
                      snr_gamma=5.0, offset_noise=0.05, gradient_checkpointing=True)
    metrics = train(cfg, photos, tmp_path / "out", checkpoint_dir=tmp_path / "ck")
    manifest = json.loads((tmp_path / "out" / "lensa_manifest.json").read_text())
    assert manifest["prediction_type"] == "v_prediction" == metrics["prediction_type"]
    assert all(math.isfinite(x) for x in _losses(tmp_path / "out"))


def test_class_image_cache_is_reused(tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from lensa_for_all.training.class_images import class_image_cache_key, ensure_class_images
    from lensa_for_all.training.data import list_images

    cfg = tiny_config(tiny_sd, "lora", num_class_images=3)
    seen = []
    folder = ensure_class_images(cfg, cache_root=tmp_path, device="cpu", progress=seen.append)
    images = list_images(folder)
    assert len(images) == 3 and seen[-1].stage == "class_images" and seen[-1].step == 3
    with Image.open(images[0]) as im:
        assert im.size == (64, 64)
    stamp = [p.stat().st_mtime_ns for p in images]

    import diffusers

    def no_generation(*a: object, **k: object) -> None:
        raise AssertionError("class images were generated again instead of reused")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", no_generation)
    assert ensure_class_images(cfg, cache_root=tmp_path) == folder
    assert [p.stat().st_mtime_ns for p in images] == stamp
    # the key covers model, revision, prompt, resolution and count
    key = class_image_cache_key(cfg.base_model, None, cfg.class_prompt_text, 64, 3)
    assert folder.name == key
    assert len({key, class_image_cache_key(cfg.base_model, None, cfg.class_prompt_text, 64, 4),
                class_image_cache_key(cfg.base_model, "v2", cfg.class_prompt_text, 64, 3),
                class_image_cache_key(cfg.base_model, None, "a photo of dog", 64, 3),
                class_image_cache_key(cfg.base_model, None, cfg.class_prompt_text, 128, 3)}) == 5


def test_user_class_images_are_used_without_generation(tiny_sd: Path, photos: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers

    from lensa_for_all.training.loop import train

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained",
                        lambda *a, **k: pytest.fail("should not generate class images"))
    class_dir = make_subject_photos(tmp_path / "class", n=3, seed=7)
    cfg = tiny_config(tiny_sd, "lora", max_train_steps=2, num_class_images=2, train_text_encoder=False)
    metrics = train(cfg, photos, tmp_path / "out", class_dir=class_dir, checkpoint_dir=tmp_path / "ck",
                    class_image_cache=tmp_path / "cache")
    assert metrics["num_class_images"] == 2
    assert not (tmp_path / "cache").exists()


class _ScriptedEvaluator:
    """Scores that get worse after the first evaluation (lower is better)."""

    name = "scripted"
    higher_is_better = False

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, generated: list, references: list) -> float:
        assert generated and references and generated[0].size == references[0].size == (64, 64)
        self.calls.append(len(generated))
        return float(len(self.calls))


@pytest.mark.slow
def test_early_stopping_keeps_the_best_weights(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from lensa_for_all.training.loop import train

    common = dict(with_prior_preservation=False, train_text_encoder=False, learning_rate=1e-3,
                  validation_prompts=("a photo of {token} {subject_class}",), validation_inference_steps=1)
    cfg = tiny_config(tiny_sd, "lora", max_train_steps=10, validation_steps=1, early_stopping=True,
                      early_stopping_patience=2, **common)
    evaluator = _ScriptedEvaluator()
    metrics = train(cfg, photos, tmp_path / "es" / "out", checkpoint_dir=tmp_path / "es" / "ck", evaluator=evaluator)
    assert metrics["stopped_early"] and metrics["steps"] == 3
    assert metrics["best_step"] == 1 and metrics["best_score"] == 1.0
    assert len(evaluator.calls) == 3
    assert sorted(p.name for p in (tmp_path / "es" / "out" / "validation").iterdir()) == [
        "step-000001", "step-000002", "step-000003"]

    one = tiny_config(tiny_sd, "lora", max_train_steps=1, **common)
    train(one, photos, tmp_path / "one" / "out", checkpoint_dir=tmp_path / "one" / "ck")
    best = load_file(str(tmp_path / "es" / "out" / "pytorch_lora_weights.safetensors"))
    after_one = load_file(str(tmp_path / "one" / "out" / "pytorch_lora_weights.safetensors"))
    assert all(bool((best[k] == after_one[k]).all()) for k in best)


def test_lora_exports_and_manifest(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, max_train_steps=2, learning_rate=1e-2,
                      lora_alpha=8.0)
    train(cfg, photos, tmp_path / "out", checkpoint_dir=tmp_path / "ck")
    out = tmp_path / "out"
    with safe_open(str(out / "ohwx_lora_kohya.safetensors"), "pt") as f:
        keys = list(f.keys())
        alphas = {float(f.get_tensor(k)) for k in keys if k.endswith(".alpha")}
    assert alphas == {8.0}
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in keys)

    manifest = json.loads((out / "lensa_manifest.json").read_text())
    for key in ("method", "base_model", "revision", "token", "subject_class", "steps", "final_loss", "metrics",
                "library_version", "resolution", "prediction_type", "lora_weights", "kohya_weights"):
        assert key in manifest, key
    assert manifest["method"] == "lora" and manifest["steps"] == 2 and manifest["token"] == "ohwx"
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: diffusers")
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    ids = pipe.tokenizer(["a photo of ohwx person"], return_tensors="pt").input_ids
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = pipe.text_encoder(ids)[0]
        pipe.load_lora_weights(out)
        after = pipe.text_encoder(ids)[0]
        unet_out = pipe.unet(x, 10, after).sample
    assert not torch.allclose(before, after)
    # the kohya file (read by diffusers' own kohya converter) is the same LoRA, alpha included
    kohya = StableDiffusionPipeline.from_pretrained(tiny_sd)
    kohya.load_lora_weights(out, weight_name="ohwx_lora_kohya.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(kohya.text_encoder(ids)[0], after)
        torch.testing.assert_close(kohya.unet(x, 10, after).sample, unet_out)


def test_too_few_photos_and_bad_base_models(tiny_sd: Path, tmp_path: Path) -> None:
    from lensa_for_all.training.loop import train

    two = make_subject_photos(tmp_path / "two", n=2)
    with pytest.raises(PhotoSetError, match="at least 3"):
        train(tiny_config(tiny_sd), two, tmp_path / "out")
    enough = make_subject_photos(tmp_path / "four", n=4)
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        train(tiny_config(tmp_path / "four"), enough, tmp_path / "out")
    not_sd = tmp_path / "not-sd"
    not_sd.mkdir()
    (not_sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline", "unet": [],
                                                         "text_encoder_2": []}))
    with pytest.raises(ModelNotFoundError, match="not Stable Diffusion 1.x/2.x"):
        train(tiny_config(not_sd), enough, tmp_path / "out")
    with pytest.raises(ModelNotFoundError, match="cannot be found"):
        train(tiny_config(tiny_sd).replace(base_model="nobody/no-such-model"), enough, tmp_path / "out")


def test_prepared_folder_manifest_order_is_used(tmp_path: Path) -> None:
    from lensa_for_all.training.data import list_images

    folder = make_subject_photos(tmp_path / "prepared", n=3)
    (folder / "manifest.json").write_text(json.dumps({"photos": [{"file": "photo-02.png"}, {"file": "photo-00.png"}]}))
    assert [p.name for p in list_images(folder)] == ["photo-02.png", "photo-00.png"]
    (folder / "manifest.json").unlink()
    assert [p.name for p in list_images(folder)] == ["photo-00.png", "photo-01.png", "photo-02.png"]
    with pytest.raises(PhotoSetError, match="does not exist"):
        list_images(tmp_path / "nowhere")


def test_optimizer_and_precision_fall_back_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from lensa_for_all.config import TrainingConfig
    from lensa_for_all.training.loop import _make_optimizer, resolve_mixed_precision

    param = torch.nn.Parameter(torch.zeros(3))
    with caplog.at_level("WARNING"):
        opt = _make_optimizer(TrainingConfig(use_8bit_adam=True), [{"params": [param], "lr": 1e-3}], "cpu")
    assert isinstance(opt, torch.optim.AdamW) and "8-bit AdamW needs a CUDA GPU" in caplog.text
    assert opt.defaults["fused"] or opt.defaults["foreach"]
    if not torch.cuda.is_available():
        with caplog.at_level("WARNING"):
            assert resolve_mixed_precision("fp16") == "no"
        assert "needs a CUDA GPU" in caplog.text
        assert resolve_mixed_precision("auto") == "no" and resolve_mixed_precision("bf16") == "bf16"


@pytest.mark.parametrize("failure", ["cuda_oom", "cpu_oom"])
def test_resource_errors_say_what_to_do(failure: str, tiny_sd: Path, photos: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The allocator fails inside the UNet's forward pass, as it does for real; the loop turns it into advice.
    (A real ENOSPC deep in save_checkpoint is in test_faults_checkpoints.py.)"""
    import torch
    from diffusers import UNet2DConditionModel

    from lensa_for_all.errors import OutOfMemoryError
    from lensa_for_all.training import loop

    def forward(self: object, *args: object, **kwargs: object) -> None:
        if failure == "cuda_oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate ... out of memory")

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, train_text_encoder=False, max_train_steps=1)
    with pytest.raises(OutOfMemoryError, match="mixed_precision='fp16'.*gradient_checkpointing=True.*use_8bit_adam"):
        loop.train(cfg, photos, tmp_path / "out")
    assert not (tmp_path / "out" / "pytorch_lora_weights.safetensors").exists()


@pytest.mark.gpu
def test_mixed_precision_lora_on_cuda(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    import math

    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", mixed_precision="fp16", use_8bit_adam=True, gradient_checkpointing=True,
                      max_train_steps=3)
    metrics = train(cfg, photos, tmp_path / "out", checkpoint_dir=tmp_path / "ck",
                    class_image_cache=tmp_path / "cache")
    assert metrics["mixed_precision"] == "fp16" and math.isfinite(metrics["final_loss"])
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()


def test_missing_tracker_is_a_config_error(photos: Path, tmp_path: Path) -> None:
    import importlib.util

    from lensa_for_all.errors import ConfigError
    from lensa_for_all.training.loop import train

    if importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    with pytest.raises(ConfigError, match="pip install wandb"):
        train(tiny_config(Path("unused"), report_to="wandb"), photos, tmp_path / "out")


@pytest.mark.slow
def test_uncached_latents_match_the_cached_path(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    """cache_latents=False encodes at every step, as the reference does; the losses are the same."""
    from lensa_for_all.training.loop import train

    runs = {}
    for cached in (True, False):
        cfg = tiny_config(tiny_sd, "full", with_prior_preservation=False, train_text_encoder=False,
                          max_train_steps=3, cache_latents=cached)
        out = tmp_path / f"cached-{cached}"
        train(cfg, photos, out, checkpoint_dir=tmp_path / f"ck-{cached}")
        runs[cached] = _losses(out)
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)


@pytest.mark.slow
def test_checkpoints_of_another_run_are_refused(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    from lensa_for_all.errors import ConfigError
    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, train_text_encoder=False, max_train_steps=3,
                      checkpointing_steps=1)
    train(cfg, photos, tmp_path / "out")
    assert (tmp_path / "out.checkpoints" / "checkpoint-000002").is_dir()
    with pytest.raises(ConfigError, match=r"another run \(token: 'ohwx' then, 'sks' now\)"):
        train(cfg.replace(token="sks"), photos, tmp_path / "out")
    # a longer run of the same kind resumes; resume_from=None starts over
    assert train(cfg.replace(max_train_steps=4), photos, tmp_path / "out")["resumed_from"].endswith("000002")
    assert train(cfg.replace(token="sks", resume_from=None), photos, tmp_path / "out")["resumed_from"] is None


def test_lora_adapter_uses_configured_dropout_and_gaussian_init(tiny_sd: Path) -> None:
    """The LoRA settings reach peft: dropout as configured, down-projections gaussian, up-projections zero."""
    import torch
    from diffusers import UNet2DConditionModel

    from lensa_for_all.training.lora import add_lora

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    add_lora(unet, rank=4, alpha=4, dropout=0.25, target_modules=("to_q", "to_v"))
    layers = [m for name, m in unet.named_modules() if name.endswith(("to_q", "to_v")) and hasattr(m, "lora_A")]
    assert layers
    for layer in layers:
        drop = layer.lora_dropout["default"]
        assert isinstance(drop, torch.nn.Dropout) and drop.p == 0.25
        assert bool((layer.lora_B["default"].weight == 0).all())
        a = layer.lora_A["default"].weight.detach()
        # gaussian init: std 1/rank, not kaiming-uniform's bounded values
        assert abs(float(a.std()) - 1 / 4) < 0.1


@pytest.mark.slow
def test_a_second_run_in_the_same_process_may_change_precision(tiny_sd: Path, photos: Path, tmp_path: Path) -> None:
    """accelerate keeps one mixed-precision state per process; the loop drops a finished run's state."""
    from lensa_for_all.training.loop import train

    cfg = tiny_config(tiny_sd, "lora", with_prior_preservation=False, train_text_encoder=False, max_train_steps=1)
    assert train(cfg, photos, tmp_path / "a", checkpoint_dir=tmp_path / "a-ck")["mixed_precision"] == "no"
    # bf16 runs on a CPU too (fp16 would fall back to float32); before the fix this raised
    # "AcceleratorState has already been initialized and cannot be changed"
    metrics = train(cfg.replace(mixed_precision="bf16"), photos, tmp_path / "b", checkpoint_dir=tmp_path / "b-ck")
    assert metrics["mixed_precision"] == "bf16"
