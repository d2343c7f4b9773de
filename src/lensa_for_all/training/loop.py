"""The DreamBooth training loop: full fine-tuning or LoRA, epsilon or v-prediction, prior preservation.

Why it is faster and leaner than diffusers' ``train_dreambooth.py`` at the same settings:

* every image goes through the VAE once (instance and class, plain and mirrored), then the VAE is freed;
* prompt embeddings are computed once when the text encoder is frozen, then the encoder is freed;
* AdamW is fused (or ``foreach``), gradients are clipped with ``foreach`` and reset with ``set_to_none``;
* instance and class latents go through the UNet in one batch; attention is PyTorch SDPA.

All randomness of a step (data order, flips, latent samples, noise, timesteps) comes from one
``torch.Generator`` whose state is checkpointed, so a resumed run finishes with the same weights.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from ..errors import ConfigError, DiskFullError, OutOfMemoryError, PhotoSetError, TrainingError
from ..families import SD1, ModelFamily, PromptEmbeddings
from .data import MIN_PHOTOS, list_images
from .progress import ProgressCallback, TrainingProgress

__all__ = ["train", "resolve_mixed_precision", "noisy_and_target"]

log = logging.getLogger(__name__)

OOM_ADVICE = (
    "Out of memory. Try, in this order: mixed_precision='fp16' (or 'bf16'), gradient_checkpointing=True, "
    "use_8bit_adam=True, method='lora', train_text_encoder=False, a smaller resolution, a larger GPU."
)


def resolve_mixed_precision(requested: str) -> str:
    """``"auto"`` -> bf16 on GPUs that support it, fp16 on other GPUs, ``"no"`` on CPU."""
    import torch

    if not torch.cuda.is_available():
        if requested == "fp16":
            log.warning("mixed_precision='fp16' needs a CUDA GPU; training in float32 instead.")
            return "no"
        return "no" if requested == "auto" else requested
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def _check_tracker(report_to: str) -> None:
    """Fail before any work when the chosen tracker is not installed."""
    import importlib.util

    needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}.get(report_to, ())
    if needs and not any(importlib.util.find_spec(m) for m in needs):
        raise ConfigError(f"TrainingConfig.report_to: {report_to!r} is not installed; `pip install {needs[0]}` "
                          "or set report_to='none'.")


def _forget_finished_accelerator() -> None:
    """Drop the state a previous run in this process left in accelerate.

    accelerate keeps one mixed-precision setting per process and refuses an ``Accelerator`` with another
    one ("AcceleratorState has already been initialized"), so a notebook that trained in fp16 could not
    then train in bf16. The distributed set-up (``PartialState``) is kept: it belongs to the process.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


# settings that must match for a checkpoint to be resumed (others, e.g. max_train_steps, may change)
_RUN_IDENTITY = ("base_model", "revision", "method", "token", "subject_class", "resolution", "train_text_encoder",
                 "with_prior_preservation", "lora_rank", "lora_target_modules", "text_encoder_lora_target_modules",
                 "seed")


def _run_identity(config: TrainingConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k in _RUN_IDENTITY}


def _check_same_run(checkpoint: Path, config: TrainingConfig) -> None:
    """Refuse to resume checkpoints written by a different kind of run."""
    import json

    saved = json.loads((checkpoint / "state.json").read_text(encoding="utf-8")).get("run")
    if not saved:
        return
    now = _run_identity(config)
    diff = [f"{k}: {saved.get(k)!r} then, {now[k]!r} now" for k in now if saved.get(k) != now[k]]
    if diff:
        raise ConfigError(
            f"The checkpoints in {checkpoint.parent} belong to another run ({'; '.join(diff)}). Delete that folder, "
            "use another output folder, or set resume_from=None to start over."
        )


def _make_optimizer(config: TrainingConfig, groups: list[dict[str, Any]], device_type: str) -> Any:
    import torch

    kwargs: dict[str, Any] = dict(betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.adam_weight_decay,
                  eps=config.adam_epsilon)
    if config.use_8bit_adam:
        if device_type == "cuda":
            try:
                import bitsandbytes as bnb

                return bnb.optim.AdamW8bit(groups, **kwargs)
            except Exception as exc:  # not installed, or no kernel for this GPU
                log.warning("8-bit AdamW is unavailable (%s); using fused AdamW instead. "
                            "Install bitsandbytes on a CUDA machine to save optimizer memory.", exc)
        else:
            log.warning("8-bit AdamW needs a CUDA GPU; using fused AdamW instead.")
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def noisy_and_target(latents: Any, noise: Any, timesteps: Any, alphas_cumprod: Any,
                     prediction_type: str) -> tuple[Any, Any, Any]:
    """The forward-diffusion sample and the UNet's regression target (noise, or velocity for v-prediction).

    The same arithmetic as ``DDPMScheduler.add_noise`` / ``get_velocity``, in float32, without their
    per-call device transfers. Also returns alpha-bar per sample (for min-SNR weighting).
    """
    n = latents.shape[0]
    ac = alphas_cumprod[timesteps].float().view(n, 1, 1, 1)
    sqrt_ac, sqrt_one_minus = ac.sqrt(), (1 - ac).sqrt()
    noisy = sqrt_ac * latents + sqrt_one_minus * noise
    target = noise if prediction_type == "epsilon" else sqrt_ac * noise - sqrt_one_minus * latents
    return noisy, target, ac


class _Sampler:
    """Epoch-wise random order over ``n`` items, drawn from the loop's generator (checkpointable)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.order: list[int] = []
        self.pos = 0

    def take(self, k: int, generator: Any) -> list[int]:
        import torch

        out = []
        for _ in range(k):
            if self.pos >= len(self.order):
                self.order = torch.randperm(self.n, generator=generator).tolist()
                self.pos = 0
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    def state(self) -> dict[str, Any]:
        return {"order": self.order, "pos": self.pos}

    def load(self, state: dict[str, Any]) -> None:
        self.order, self.pos = list(state["order"]), int(state["pos"])


def train(
    config: TrainingConfig,
    instance_dir: str | Path,
    output_dir: str | Path,
    class_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    *,
    evaluator: Any | None = None,
    class_image_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Train on the photos in ``instance_dir`` and write the artifacts to ``output_dir``; return metrics.

    ``class_dir`` holds user-supplied class images; without it (and with prior preservation on) class
    images are generated once and cached under ``class_image_cache``. Checkpoints go to
    ``checkpoint_dir`` (default ``<output_dir>.checkpoints`` beside it) and a run resumes from the newest one
    when ``config.resume_from == "latest"``. ``evaluator`` overrides the early-stopping evaluator.
    """
    import torch

    run = _Run(config, Path(instance_dir), Path(output_dir), Path(class_dir) if class_dir else None,
               Path(checkpoint_dir) if checkpoint_dir else Path(output_dir).with_name(Path(output_dir).name + ".checkpoints"),
               progress, evaluator, Path(class_image_cache) if class_image_cache else None)
    try:
        return run.execute()
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(OOM_ADVICE) from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise OutOfMemoryError(OOM_ADVICE) from exc
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                f"No space left on the disk while writing to {exc.filename or output_dir}. Free some space, raise "
                "checkpointing_steps or lower checkpoints_total_limit, or choose another output folder; then run "
                "again (it resumes from the newest checkpoint)."
            ) from exc
        raise


def _evaluation_record(evaluator: Any, step: int, score: float) -> dict[str, Any]:
    """What one validation scored, logged and kept in the metrics; the likeness evaluator adds per-image
    scores and the images flagged as overfitting (a training photo's pose and background copied)."""
    record: dict[str, Any] = {"step": step, "metric": getattr(evaluator, "name", "score"), "score": score}
    last = getattr(evaluator, "last", None)
    if isinstance(last, dict) and last:
        record["scores"] = [round(float(x), 4) for x in last.get("scores", [])]
        record["overfit"] = list(last.get("overfit", []))
    log.info("Validation at step %d: %s %.4f", step, record["metric"], score)
    if record.get("overfit"):
        log.warning("Step %d: %d validation image(s) look like a training photo pasted in (overfitting); an earlier "
                    "checkpoint or fewer steps may generalise better.", step, len(record["overfit"]))
    return record


class _Run:
    """One training run's state; :meth:`execute` is the whole of it."""

    def __init__(self, config: TrainingConfig, instance_dir: Path, output_dir: Path, class_dir: Path | None,
                 checkpoint_dir: Path, progress: ProgressCallback | None, evaluator: Any | None,
                 class_image_cache: Path | None) -> None:
        self.config = config
        self.instance_dir = instance_dir
        self.output_dir = output_dir
        self.class_dir = class_dir
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress
        self.evaluator = evaluator
        self.class_image_cache = class_image_cache
        self.validation_vae: Any = None
        self.validation_text_encoders: dict[str, Any] = {}
        self.family: Any = None

    def report(self, step: int, total: int, *, stage: str = "train", loss: float | None = None,
               lr: float | None = None, sps: float | None = None) -> None:
        if self.progress is not None:
            self.progress(TrainingProgress(step=step, total_steps=total, loss=loss, lr=lr,
                                           seconds_per_step=sps, stage=stage))

    # -------------------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch
        from accelerate import Accelerator

        from . import artifacts, checkpoints, lora
        from .data import PixelSource, encode_latents, load_pixels
        from .models import check_base_model, load_component, load_training_vae

        cfg = self.config
        _check_tracker(cfg.report_to)
        photos = list_images(self.instance_dir)
        if len(photos) < MIN_PHOTOS:
            raise PhotoSetError(
                f"Found {len(photos)} photo(s) in {self.instance_dir}; DreamBooth needs at least {MIN_PHOTOS} "
                "(4-20 varied photos of the subject work best). Add photos and run again."
            )
        total_steps = cfg.resolve_max_train_steps(len(photos))
        family = self.family = check_base_model(cfg.base_model, cfg.revision, cfg.model_family)
        if cfg.method == "full" and family.full_fine_tune_refusal:
            raise ConfigError(f"TrainingConfig.method: {family.full_fine_tune_refusal}")
        if family.default_resolution > 512 and cfg.resolution <= 512:
            log.warning("%s is trained for %d px; at resolution=%d its images are worse. Use resolution=%d if the "
                        "GPU allows.", family.label, family.default_resolution, cfg.resolution,
                        family.default_resolution)

        mixed = resolve_mixed_precision(cfg.mixed_precision)
        _forget_finished_accelerator()
        accelerator = Accelerator(
            mixed_precision=mixed,
            log_with=None if cfg.report_to == "none" else cfg.report_to,
            project_dir=str(self.output_dir / "logs"),
        )
        device = accelerator.device
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        # one stream per process, so data-parallel GPUs see different batches
        generator = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)

        # ---- class images (prior preservation) ------------------------------------------------
        class_paths: list[Path] = []
        if cfg.with_prior_preservation:
            with accelerator.main_process_first():  # one process generates, the others reuse the cache
                class_paths = self._class_images(device)

        # ---- latents, computed once -------------------------------------------------------------
        self.report(0, total_steps, stage="latents")
        vae = load_training_vae(cfg, family, mixed).to(device, dtype=weight_dtype)
        vae.requires_grad_(False)
        vae_scale = float(vae.config.scaling_factor)
        instance_latents: Any
        class_latents: Any
        if cfg.cache_latents:
            instance_latents = encode_latents(vae, photos, cfg.resolution, center_crop=cfg.center_crop,
                                              flips=cfg.random_flip, crop_seed=cfg.seed)
            class_latents = (encode_latents(vae, class_paths, cfg.resolution, center_crop=cfg.center_crop,
                                            flips=cfg.random_flip, crop_seed=cfg.seed) if class_paths else None)
            del vae
            gc.collect()
        else:
            opts: dict[str, Any] = dict(center_crop=cfg.center_crop, flips=cfg.random_flip, crop_seed=cfg.seed)
            instance_latents = PixelSource(load_pixels(photos, cfg.resolution, **opts), vae)
            class_latents = (PixelSource(load_pixels(class_paths, cfg.resolution, **opts), vae)
                             if class_paths else None)

        # ---- text encoder(s): trained, or used once for the prompt embeddings -------------------
        tokenizers = [load_component(cfg.base_model, name, cfg.revision, family) for name in family.tokenizer_names]
        prompts = [cfg.instance_prompt_text] + ([cfg.class_prompt_text] if class_latents is not None else [])
        input_ids = [ids.to(device) for ids in family.tokenize(tokenizers, prompts)]
        text_encoders = {name: load_component(cfg.base_model, name, cfg.revision, family)
                         for name in family.text_encoder_names}
        cached_embeddings = None
        if not cfg.train_text_encoder:
            for encoder in text_encoders.values():
                encoder.to(device, dtype=weight_dtype).requires_grad_(False)
            with torch.inference_mode():
                cached_embeddings = family.encode(list(text_encoders.values()), input_ids).to(weight_dtype)
            text_encoders.clear()
            gc.collect()
        else:
            for encoder in text_encoders.values():
                encoder.to(device)

        # ---- UNet and what is trained ---------------------------------------------------------
        from diffusers import DDPMScheduler
        from diffusers.models.attention_processor import AttnProcessor2_0

        noise_scheduler = load_component(cfg.base_model, "scheduler", cfg.revision)
        noise_scheduler = DDPMScheduler.from_config(noise_scheduler.config)
        prediction_type = noise_scheduler.config.prediction_type
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"The base model's scheduler predicts {prediction_type!r}; only 'epsilon' and "
                              "'v_prediction' models can be trained.")
        unet = load_component(cfg.base_model, "unet", cfg.revision)
        unet.set_attn_processor(AttnProcessor2_0())
        if cfg.method == "lora":
            unet.to(device, dtype=weight_dtype)
            lora.add_lora(unet, rank=cfg.lora_rank, alpha=cfg.effective_lora_alpha, dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_target_modules)
            for encoder in text_encoders.values():
                encoder.to(dtype=weight_dtype)
                lora.add_lora(encoder, rank=cfg.lora_rank, alpha=cfg.effective_lora_alpha,
                              dropout=cfg.lora_dropout, target_modules=cfg.text_encoder_lora_target_modules)
            for model in (unet, *text_encoders.values()):
                for p in model.parameters():
                    if p.requires_grad:
                        p.data = p.data.float()
        else:
            unet.to(device).requires_grad_(True)
            for encoder in text_encoders.values():
                encoder.requires_grad_(True)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            for encoder in text_encoders.values():  # transformers 5 renamed it
                enable = getattr(encoder, "activation_checkpointing_enable", None)
                (enable or encoder.gradient_checkpointing_enable)()
        unet.train()
        for encoder in text_encoders.values():
            encoder.train()

        models: dict[str, Any] = {"unet": unet, **text_encoders}
        groups: list[dict[str, Any]] = [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": cfg.learning_rate}]
        for encoder in text_encoders.values():
            groups.append({"params": [p for p in encoder.parameters() if p.requires_grad],
                           "lr": cfg.effective_text_encoder_learning_rate})
        params = [p for g in groups for p in g["params"]]
        optimizer = _make_optimizer(cfg, groups, device.type)

        from diffusers.optimization import get_scheduler

        lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                     num_training_steps=total_steps)
        prepared = accelerator.prepare(*models.values(), optimizer)
        models = dict(zip(models, prepared[:-1], strict=True))
        optimizer = prepared[-1]
        unet_t = models["unet"]
        te_t = [models[name] for name in text_encoders]  # the prepared (wrapped) text encoders being trained

        # ---- resume -----------------------------------------------------------------------------
        instance_sampler = _Sampler(instance_latents.num_images)
        class_sampler = _Sampler(class_latents.num_images) if class_latents is not None else None
        from .evaluators import EarlyStopping, make_evaluator

        stopper = EarlyStopping(patience=cfg.early_stopping_patience)
        evaluator = self.evaluator
        if cfg.early_stopping and evaluator is None:
            evaluator = make_evaluator(cfg.early_stopping_metric)
        step = 0
        losses: list[float] = []
        evaluations: list[dict[str, Any]] = []  # one per validation scored: step, score (and likeness details)
        resumed_from = None
        skipped: list[str] = []
        loaded = self._load_resume_point(models, accelerator, getattr(optimizer, "optimizer", optimizer),
                                         lr_scheduler, generator, skipped)
        if loaded is not None:
            start, state = loaded
            step = int(state["step"])
            losses = [float(x) for x in state.get("losses", [])]
            instance_sampler.load(state["instance_sampler"])
            if class_sampler is not None and state.get("class_sampler"):
                class_sampler.load(state["class_sampler"])
            stopper.load(state.get("early_stopping", {}))
            evaluations = list(state.get("evaluations") or [])
            resumed_from = str(start)
            log.info("Resumed from %s at step %d", start, step)

        if accelerator.is_main_process and cfg.report_to != "none":
            accelerator.init_trackers("lensa-dreambooth", config=cfg.to_dict())

        # ---- the loop -----------------------------------------------------------------------------
        alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
        num_timesteps = int(noise_scheduler.config.num_train_timesteps)
        bsz = cfg.train_batch_size
        step_times: list[float] = []
        stopped_early = False
        reference_images = None
        while step < total_steps:
            t0 = time.perf_counter()
            step_loss = 0.0
            for micro in range(cfg.gradient_accumulation_steps):
                sync = micro == cfg.gradient_accumulation_steps - 1
                ctx = contextlib.nullcontext() if sync else accelerator.no_sync(unet_t)
                with ctx, accelerator.autocast():
                    loss = self._loss(
                        instance_latents, class_latents, instance_sampler, class_sampler, generator, bsz,
                        device, weight_dtype, vae_scale, noise_scheduler, alphas_cumprod, num_timesteps,
                        prediction_type, unet_t, te_t, input_ids, cached_embeddings, family,
                    ) / cfg.gradient_accumulation_steps
                accelerator.backward(loss)
                step_loss += float(loss.detach())
            if cfg.max_grad_norm is not None:
                accelerator.unscale_gradients()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm, foreach=True)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(step_loss)
            step_times.append(time.perf_counter() - t0)
            lr = float(lr_scheduler.get_last_lr()[0])
            if not math.isfinite(step_loss):
                raise TrainingError(
                    f"The loss became {step_loss} at step {step}. Lower the learning rate (now {cfg.learning_rate}) "
                    "or use mixed_precision='bf16' instead of 'fp16'."
                )
            if cfg.report_to != "none":
                accelerator.log({"loss": step_loss, "lr": lr}, step=step)
            if cfg.validation_steps and step % cfg.validation_steps == 0 and accelerator.is_main_process:
                images = self._validate(step, total_steps, accelerator, unet_t, te_t, device, weight_dtype)
                if evaluator is not None and cfg.early_stopping:
                    if reference_images is None:
                        from .data import load_training_image

                        reference_images = [load_training_image(p, cfg.resolution) for p in photos]
                    score = float(evaluator.score(images, reference_images))
                    evaluations.append(_evaluation_record(evaluator, step, score))
                    if stopper.update(score, step, higher_is_better=bool(evaluator.higher_is_better)):
                        self._save_best(models, accelerator, step, score)
                    if cfg.report_to != "none":
                        accelerator.log({f"eval/{evaluator.name}": score}, step=step)
            if cfg.checkpointing_steps and step % cfg.checkpointing_steps == 0 and step < total_steps \
                    and accelerator.is_main_process:
                self.report(step, total_steps, stage="save")
                checkpoints.save_checkpoint(
                    self.checkpoint_dir, step, trainable=self._trainable(models, accelerator),
                    optimizer=getattr(optimizer, "optimizer", optimizer), lr_scheduler=lr_scheduler,
                    generator=generator, total_limit=cfg.checkpoints_total_limit,
                    state={"losses": losses, "instance_sampler": instance_sampler.state(),
                           "class_sampler": class_sampler.state() if class_sampler else None,
                           "early_stopping": stopper.state(), "run": _run_identity(cfg),
                           "evaluations": evaluations},
                )
            self.report(step, total_steps, loss=step_loss, lr=lr, sps=step_times[-1])
            if cfg.early_stopping and stopper.should_stop:
                stopped_early = True
                log.info("Early stopping at step %d: no improvement for %d evaluations (best at step %s)",
                         step, cfg.early_stopping_patience, stopper.best_step)
                break

        # ---- artifacts --------------------------------------------------------------------------
        accelerator.wait_for_everyone()
        if stopper.best_step is not None and cfg.early_stopping:
            self._restore_best(models, accelerator)
        tail = losses[-max(1, min(10, len(losses) // 5)):] if losses else []
        metrics: dict[str, Any] = {
            "steps": step,
            "total_steps": total_steps,
            "num_photos": len(photos),
            "num_class_images": len(class_paths),
            "final_loss": statistics.fmean(tail) if tail else None,
            "initial_loss": statistics.fmean(losses[:len(tail)]) if tail else None,
            "median_seconds_per_step": statistics.median(step_times) if step_times else None,
            "mixed_precision": mixed,
            "resumed_from": resumed_from,
            "resume_skipped": skipped,
            "stopped_early": stopped_early,
            "best_step": stopper.best_step,
            "best_score": stopper.best_score,
            "early_stopping_metric": getattr(evaluator, "name", None) if cfg.early_stopping else None,
            "evaluations": evaluations,
            "prediction_type": prediction_type,
        }
        if accelerator.is_main_process:
            self.report(step, total_steps, stage="save")
            unet_u = accelerator.unwrap_model(unet_t)
            te_u = [accelerator.unwrap_model(t) for t in te_t]
            artifacts.write_artifacts(self.output_dir, cfg, unet_u, te_u[0] if te_u else None, metrics=metrics,
                                      losses=losses, prediction_type=prediction_type, family=family,
                                      text_encoder_2=te_u[1] if len(te_u) > 1 else None)
        accelerator.end_training()
        return metrics

    # -------------------------------------------------------------------------------------------
    def _loss(self, inst: Any, cls: Any, inst_sampler: _Sampler, cls_sampler: _Sampler | None, generator: Any,
              bsz: int, device: Any, dtype: Any, vae_scale: float, noise_scheduler: Any, alphas_cumprod: Any,
              num_timesteps: int, prediction_type: str, unet: Any, text_encoders: list[Any], input_ids: list[Any],
              cached_embeddings: Any, family: ModelFamily = SD1) -> Any:
        import torch

        cfg = self.config
        if cached_embeddings is not None and not isinstance(cached_embeddings, PromptEmbeddings):
            cached_embeddings = PromptEmbeddings(cached_embeddings)

        def draw(cache: Any, sampler: _Sampler) -> Any:
            idx = torch.tensor(sampler.take(bsz, generator))
            view = (torch.randint(0, cache.num_views, (bsz,), generator=generator) if cache.num_views > 1
                    else torch.zeros(bsz, dtype=torch.long))
            mean, std = cache.dist(idx, view)
            return mean + std * torch.randn(mean.shape, generator=generator)

        parts = [draw(inst, inst_sampler)]
        if cls is not None and cls_sampler is not None:
            parts.append(draw(cls, cls_sampler))
        latents = torch.cat(parts) * vae_scale
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator)
        if cfg.offset_noise:
            noise = noise + cfg.offset_noise * torch.randn((n, latents.shape[1], 1, 1), generator=generator)
        timesteps = torch.randint(0, num_timesteps, (n,), generator=generator)
        latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
        noisy, target, ac = noisy_and_target(latents, noise, timesteps, alphas_cumprod, prediction_type)
        noisy = noisy.to(dtype)

        rows = [0] * bsz + ([1] * bsz if len(parts) > 1 else [])
        if cached_embeddings is not None:
            embeddings = cached_embeddings.rows(rows)
        else:
            embeddings = family.encode(text_encoders, [ids[rows] for ids in input_ids])
        args, kwargs = family.unet_conditioning(embeddings, cfg.resolution)
        pred = unet(noisy, timesteps, *args, **kwargs, return_dict=False)[0].float()

        if cfg.snr_gamma is not None:
            snr = ac / (1 - ac)
            weight = torch.clamp(snr, max=cfg.snr_gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)
            per = ((pred - target) ** 2).mean(dim=(1, 2, 3)) * weight.view(n)
        else:
            per = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = per[:bsz].mean()
        if len(parts) > 1:
            loss = loss + cfg.prior_loss_weight * per[bsz:].mean()
        return loss

    # -------------------------------------------------------------------------------------------
    def _class_images(self, device: Any) -> list[Path]:
        from .class_images import ensure_class_images

        cfg = self.config
        if self.class_dir is not None:
            paths = list_images(self.class_dir)
            if paths:
                if len(paths) < cfg.num_class_images:
                    log.info("Using %d user-supplied class images (num_class_images=%d)", len(paths),
                             cfg.num_class_images)
                return paths[: cfg.num_class_images]
        folder = ensure_class_images(cfg, cache_root=self.class_image_cache, device=device,
                                     progress=self.progress)
        return list_images(folder)[: cfg.num_class_images]

    def _resume_candidates(self, skipped: list[str]) -> list[Path]:
        """Checkpoints to try, best first: the newest that verify (``latest``) or the one named."""
        from .checkpoints import valid_checkpoints, verify_checkpoint

        cfg = self.config
        if cfg.resume_from is None:
            return []

        def skip(path: Path, why: str) -> None:
            skipped.append(f"{path.name}: {why}")
            log.warning("Not resuming from %s: %s; trying the one before it.", path, why)

        if cfg.resume_from == "latest":
            return list(valid_checkpoints(self.checkpoint_dir, on_skip=skip))
        path = Path(cfg.resume_from)
        if not path.is_absolute():
            path = self.checkpoint_dir / path
        if not (path / "state.json").is_file():
            raise ConfigError(f"TrainingConfig.resume_from: {path} is not a checkpoint folder")
        problem = verify_checkpoint(path)
        if problem is not None:
            raise ConfigError(f"TrainingConfig.resume_from: {path} is damaged ({problem}); pass an earlier "
                              "checkpoint or resume_from='latest' to use the newest good one.")
        return [path]

    def _load_resume_point(self, models: dict[str, Any], accelerator: Any, optimizer: Any, lr_scheduler: Any,
                           generator: Any, skipped: list[str]) -> tuple[Path, dict[str, Any]] | None:
        """Restore the newest checkpoint that loads; each one passed over is logged with the reason."""
        from . import checkpoints

        for path in self._resume_candidates(skipped):
            _check_same_run(path, self.config)
            try:
                trainable, state = checkpoints.load_checkpoint(path, optimizer=optimizer, lr_scheduler=lr_scheduler,
                                                               generator=generator)
                self._load_trainable(models, trainable, accelerator)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                    raise
                skipped.append(f"{path.name}: it cannot be loaded ({exc})")
                log.warning("Not resuming from %s: it cannot be loaded (%s); trying the one before it.", path, exc)
                continue
            if skipped:
                log.warning("Resuming from %s (skipped %s).", path.name, "; ".join(skipped))
            return path, state
        if skipped:
            log.warning("No checkpoint could be resumed (%s); training from the start.", "; ".join(skipped))
        return None

    @staticmethod
    def _trainable(models: dict[str, Any], accelerator: Any) -> dict[str, Any]:
        out = {}
        for name, model in models.items():
            for pname, p in accelerator.unwrap_model(model).named_parameters():
                if p.requires_grad:
                    out[f"{name}.{pname}"] = p.detach()
        return out

    @staticmethod
    def _load_trainable(models: dict[str, Any], weights: dict[str, Any], accelerator: Any) -> None:
        import torch

        with torch.no_grad():
            for name, model in models.items():
                params = dict(accelerator.unwrap_model(model).named_parameters())
                for key, value in weights.items():
                    prefix, _, pname = key.partition(".")
                    if prefix == name:
                        params[pname].copy_(value)

    def _save_best(self, models: dict[str, Any], accelerator: Any, step: int, score: float) -> None:
        from safetensors.torch import save_file

        from ..atomic import atomic_path, write_json_atomic

        best = self.checkpoint_dir / "best"
        best.mkdir(parents=True, exist_ok=True)
        with atomic_path(best / "trainable.safetensors") as tmp:
            save_file({k: v.cpu().contiguous() for k, v in self._trainable(models, accelerator).items()}, str(tmp))
        write_json_atomic(best / "best.json", {"step": step, "score": score})

    def _restore_best(self, models: dict[str, Any], accelerator: Any) -> None:
        from safetensors.torch import load_file

        path = self.checkpoint_dir / "best" / "trainable.safetensors"
        if path.is_file():
            self._load_trainable(models, load_file(str(path)), accelerator)

    def _validate(self, step: int, total: int, accelerator: Any, unet: Any, text_encoders: list[Any], device: Any,
                  dtype: Any) -> list[Any]:
        from . import validation
        from .models import load_component, load_training_vae

        cfg = self.config
        family = self.family
        self.report(step, total, stage="validation")
        if self.validation_vae is None:
            self.validation_vae = load_training_vae(cfg, family, resolve_mixed_precision(cfg.mixed_precision)).to(
                device, dtype=dtype)
        if text_encoders:
            encoders = dict(zip(family.text_encoder_names, (accelerator.unwrap_model(t) for t in text_encoders),
                                strict=True))
        else:
            if not self.validation_text_encoders:
                self.validation_text_encoders = {
                    name: load_component(cfg.base_model, name, cfg.revision, family).to(device, dtype=dtype)
                    for name in family.text_encoder_names}
            encoders = self.validation_text_encoders
        images = validation.generate_validation_images(cfg, accelerator.unwrap_model(unet), encoders,
                                                       self.validation_vae, device, family)
        folder = self.output_dir / "validation" / f"step-{step:06d}"
        from ..atomic import atomic_path

        for i, img in enumerate(images):
            with atomic_path(folder / f"{i:02d}.png") as tmp:
                img.save(tmp)
        if cfg.report_to == "tensorboard":
            import numpy as np

            for tracker in accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_images("validation", np.stack([np.asarray(im) for im in images]), step,
                                              dataformats="NHWC")
        elif cfg.report_to == "wandb":
            for tracker in accelerator.trackers:
                if tracker.name == "wandb":
                    import wandb

                    tracker.log({"validation": [wandb.Image(im, caption=p) for im, p in
                                                zip(images, cfg.validation_prompt_texts, strict=False)]})
        return images

