"""AvatarModel: a trained model (local, ``s3://``, LoRA on a base, or an endpoint) that renders avatar packs."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from ..errors import ConfigError, GenerationError, ModelNotFoundError, PickleRefusedError
from ..prompts.catalogue import StyleCatalogue, subject_kind_for
from ..prompts.generator import MagicMode, Prompt, PromptGenerator
from ..prompts.tokens import fit_negative, token_counter_for
from ..run_lock import RunLock
from .a1111 import ModelHashes, hashes_for
from .device import choose_device, free_memory_bytes
from .job import Job, batch_key
from .pack import Avatar, AvatarPack, PackWriter, read_png_parameters
from .runner import LocalRunner, Runner
from .schedulers import DEFAULT_SCHEDULER, SCHEDULERS, canonical_name
from .sources import (
    LORA_WEIGHTS_NAME,
    ModelFolder,
    download_s3_model,
    hub_lora_snapshot,
    inspect_model_folder,
    is_hub_id,
    lora_family,
    pipeline_family,
)

__all__ = ["AvatarModel", "DEFAULT_GUIDANCE_SCALE", "DEFAULT_PACK_SIZE"]

log = logging.getLogger(__name__)

DEFAULT_GUIDANCE_SCALE = 7.5
DEFAULT_PACK_SIZE = 40
MAX_SEED = 2**32

PromptsLike = str | Prompt | PromptGenerator | Iterable[str | Prompt]
AvatarCallback = Callable[[Avatar], None]


class AvatarModel:
    """Renders avatars from a trained model; build it with :meth:`load` or :meth:`from_endpoint`.

    Generation keywords follow diffusers (``num_inference_steps``, ``guidance_scale``, ``height``,
    ``width``, ``negative_prompt``); every image gets its own seed and full metadata.
    """

    def __init__(self, runner: Runner, *, name: str, manifest: Mapping[str, Any] | None = None,
                 scheduler: str = DEFAULT_SCHEDULER, lora_scale: float = 1.0,
                 hashes: ModelHashes | None = None) -> None:
        self.runner = runner
        self.hashes = hashes or ModelHashes()
        self.name = name
        self.manifest: dict[str, Any] = dict(manifest or {})
        self.scheduler = canonical_name(scheduler)
        self.lora_scale = float(lora_scale)

    def __repr__(self) -> str:
        kind = "LoRA" if self.is_lora else "full"
        return f"AvatarModel({self.name!r}, {kind}, runner={type(self.runner).__name__})"

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: Any = None,
        scheduler: str = DEFAULT_SCHEDULER,
        lora_scale: float = 1.0,
        base_model: str | None = None,
        revision: str | None = None,
        safety_checker: bool | None = None,
        memory: Literal["auto", "low", "normal"] = "auto",
        compile: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        allow_pickle: bool = False,
    ) -> AvatarModel:
        """Load a trained model: a folder (full pipeline, or LoRA + manifest), an ``s3://`` tarball or a Hub id.

        ``base_model`` overrides the LoRA manifest's base (e.g. a local copy when offline).
        ``safety_checker=None`` keeps whatever the model ships; ``False`` switches it off.
        ``memory="low"`` turns on attention and VAE slicing; ``"auto"`` does so when the GPU has
        less than 6 GB free. ``compile=True`` wraps the UNet in ``torch.compile`` (slow first image).
        """
        text = os.fspath(source)
        canonical_name(scheduler)  # validate early
        if memory not in ("auto", "low", "normal"):
            raise ConfigError(f"memory must be 'auto', 'low' or 'normal', not {memory!r}.")
        if text.startswith("s3://"):
            folder: ModelFolder | None = inspect_model_folder(download_s3_model(text, cache_dir),
                                                              base_model=base_model)
            name = text
        elif Path(text).exists():
            folder = inspect_model_folder(text, base_model=base_model)
            name = _display_name(folder.path)
        elif is_hub_id(text):
            snapshot = hub_lora_snapshot(text, revision=revision)  # a LoRA repository loads on its base model
            folder = inspect_model_folder(snapshot, base_model=base_model) if snapshot is not None else None
            name = text
            if folder is not None:
                revision = None  # it named the LoRA's revision; the base's comes from the manifest
        else:
            raise ModelNotFoundError(
                f"{text} is neither an existing folder, an s3:// URI nor a Hugging Face model id."
            )
        choice = choose_device(device, dtype)
        pipe_kwargs: dict[str, Any] = {"torch_dtype": choice.dtype, "use_safetensors": None if allow_pickle else True}
        if safety_checker is False:
            pipe_kwargs.update(safety_checker=None, requires_safety_checker=False)
        manifest = dict(folder.manifest) if folder else {}
        if folder is None:
            pipe = _from_pretrained(text, revision=revision, **pipe_kwargs)
        elif folder.kind == "pipeline":
            pipe = _from_pretrained(str(folder.path), revision=None, **pipe_kwargs)
        else:
            base = base_model or str(folder.base_model)
            base_revision = revision or manifest.get("revision")
            trained_on, base_family = lora_family(manifest), pipeline_family(base, base_revision)
            if base_family is not None and trained_on is not base_family:
                raise ModelNotFoundError(
                    f"The LoRA in {folder.path} was trained on a {trained_on.label} base, but {base!r} is a "
                    f"{base_family.label} model. Load it on a {trained_on.label} base (the one it was trained on: "
                    f"{manifest.get('base_model')!r})."
                )
            pipe = _from_pretrained(base, revision=base_revision, **pipe_kwargs)
            try:
                pipe.load_lora_weights(str(folder.path), weight_name=LORA_WEIGHTS_NAME, adapter_name="lensa")
            except (ValueError, KeyError, OSError, RuntimeError) as exc:
                raise ModelNotFoundError(
                    f"The LoRA weights in {folder.path} do not fit the base model {base!r} ({exc}). "
                    "Load them on the base model they were trained on."
                ) from exc
        if safety_checker is True and getattr(pipe, "safety_checker", None) is None:
            warnings.warn(f"{name} ships no safety checker; images are not filtered.", stacklevel=2)
        pipe = _prepare_pipeline(pipe, choice.device, memory=memory, compile=compile)
        resolution = manifest.get("resolution")
        size = (int(resolution), int(resolution)) if resolution else None
        runner = LocalRunner(pipe, choice, name=name, is_lora=folder is not None and folder.kind == "lora",
                             default_size=size)
        trained_for = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        if trained_for > 512 >= max(runner.default_size):
            log.warning("%s is a %s model, trained for %d px; at %dx%d its images are worse. Pass width= and "
                        "height= of %d.", name, _family_label(pipe), trained_for, *runner.default_size,
                        trained_for)
        log.info("Loaded %s on %s (%s)", name, choice.device, str(choice.dtype).removeprefix("torch."))
        return cls(runner, name=name, manifest=manifest, scheduler=scheduler, lora_scale=lora_scale,
                   hashes=hashes_for(folder.path if folder else None, manifest))

    @classmethod
    def from_endpoint(cls, endpoint: Any, *, region: str | None = None, token: str | None = None,
                      subject_class: str | None = None, scheduler: str = DEFAULT_SCHEDULER,
                      default_size: tuple[int, int] | None = None) -> AvatarModel:
        """The same :meth:`generate` through a deployed SageMaker endpoint.

        ``endpoint`` is its name or a :class:`lensa_for_all.Endpoint` (use ``Endpoint.from_name`` for
        asynchronous endpoints). ``token``/``subject_class`` feed the prompt generator, since no
        manifest is read locally. ``default_size`` defaults to the model family's native size (1024 px for
        SDXL), read from the tag ``SageMakerBackend.deploy`` puts on the endpoint (512 px without one). Needs the
        ``[aws]`` extra.
        """
        from .endpoint_runner import EndpointRunner

        runner = EndpointRunner(endpoint, region=region, default_size=default_size)
        manifest = {k: v for k, v in (("token", token), ("subject_class", subject_class)) if v}
        return cls(runner, name=runner.name, manifest=manifest, scheduler=scheduler)

    # -- properties --------------------------------------------------------------------------------
    @property
    def is_lora(self) -> bool:
        return bool(self.runner.is_lora)

    @property
    def token(self) -> str:
        return str(self.manifest.get("token") or "ohwx")

    @property
    def subject_class(self) -> str:
        return str(self.manifest.get("subject_class") or "person")

    @property
    def default_size(self) -> tuple[int, int]:
        return self.runner.default_size

    @property
    def pipeline(self) -> Any:
        """The underlying diffusers pipeline (local models only)."""
        pipe = getattr(self.runner, "pipe", None)
        if pipe is None:
            raise GenerationError(f"{self.name} runs remotely; it has no local pipeline.")
        return pipe

    def prompt_generator(self, **kwargs: Any) -> PromptGenerator:
        """A :class:`PromptGenerator` for this model's token and class, counting with its tokenizer."""
        kwargs.setdefault("token", self.token)
        kwargs.setdefault("subject_class", self.subject_class)
        kwargs.setdefault("tokenizer", self.runner.tokenizer)
        return PromptGenerator(**kwargs)

    # -- generation --------------------------------------------------------------------------------
    def plan(
        self,
        prompts: PromptsLike,
        num_images: int | None = None,
        *,
        seed: int | None = None,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        scheduler: str | None = None,
        lora_scale: float | None = None,
        styles: Iterable[str] | None = None,
        magic: MagicMode | None = None,
    ) -> list[Job]:
        """The fully resolved jobs :meth:`generate` would run (prompts, seeds, settings), without rendering."""
        if num_images is not None and num_images < 1:
            raise ConfigError(f"num_images must be at least 1, not {num_images}.")
        prompt_list = self._prompts(prompts, num_images, seed=seed, styles=styles, magic=magic)
        n = num_images or len(prompt_list)
        if seed is None:
            seed = secrets.randbelow(2**31)
        if not 0 <= seed < MAX_SEED:
            raise ConfigError(f"seed must be between 0 and {MAX_SEED - 1}, not {seed}.")
        sched = canonical_name(scheduler or self.scheduler)
        dw, dh = self.default_size
        w, h = int(width or dw), int(height or dh)
        if w % 8 or h % 8 or w < 8 or h < 8:
            raise ConfigError(f"width and height must be positive multiples of 8, not {w}x{h}.")
        default_negative = fit_negative(_default_negative(self.subject_class),
                                        token_counter_for(self.runner.tokenizer))
        jobs = []
        for i, p in zip(range(n), itertools.cycle(prompt_list), strict=False):
            settings = p.settings
            steps = num_inference_steps or int(settings.get("num_inference_steps", SCHEDULERS[sched].default_steps))
            cfg = guidance_scale if guidance_scale is not None else settings.get("guidance_scale",
                                                                                 DEFAULT_GUIDANCE_SCALE)
            neg = negative_prompt if negative_prompt is not None else (p.negative or default_negative)
            jobs.append(Job(
                prompt=p.text, negative_prompt=neg, seed=(seed + i) % MAX_SEED, num_inference_steps=int(steps),
                guidance_scale=float(cfg), scheduler=sched, width=w, height=h,
                lora_scale=(float(lora_scale if lora_scale is not None else self.lora_scale)
                            if self.is_lora else None),
                style=p.style,
            ))
        return jobs

    def _prompts(self, prompts: PromptsLike, num_images: int | None, *, seed: int | None,
                 styles: Iterable[str] | None, magic: MagicMode | None) -> list[Prompt]:
        if isinstance(prompts, PromptGenerator):
            if not prompts.has_tokenizer and self.runner.tokenizer is not None:
                prompts.use_tokenizer(self.runner.tokenizer)
            return prompts.generate(num_images or DEFAULT_PACK_SIZE, styles=styles, magic=magic, seed=seed)
        if styles is not None or magic is not None:
            raise ConfigError("styles= and magic= apply to a PromptGenerator; pass one instead of prompt strings.")
        if isinstance(prompts, (str, Prompt)):
            prompts = [prompts]
        out = [p if isinstance(p, Prompt) else Prompt(str(p)) for p in prompts]
        if not out:
            raise ConfigError("No prompts given.")
        return out

    def iter_generate(
        self,
        prompts: PromptsLike,
        num_images: int | None = None,
        *,
        batch_size: int | None = None,
        progress: bool = False,
        callback_on_step_end: Callable[..., Any] | None = None,
        **settings: Any,
    ) -> Iterator[Avatar]:
        """Yield avatars as they finish; same arguments as :meth:`generate`."""
        jobs = self.plan(prompts, num_images, **settings)
        yield from self._render(jobs, batch_size=batch_size, progress=progress,
                                callback_on_step_end=callback_on_step_end)

    def _render(self, jobs: Sequence[Job], *, batch_size: int | None, progress: bool,
                callback_on_step_end: Callable[..., Any] | None) -> Iterator[Avatar]:
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}.")
        bar = _ProgressBar(len(jobs)) if progress else None
        try:
            for batch in _batches(jobs, batch_size, self.runner.auto_batch_size):
                images = self.runner.run(batch, callback_on_step_end=callback_on_step_end)
                batch_id = uuid.uuid4().hex[:12] if len(batch) > 1 else None
                for pos, (job, image) in enumerate(zip(batch, images, strict=True)):
                    if bar:
                        bar.advance()
                    yield _avatar(job, image, model=self.name, batch=batch, batch_index=pos, batch_id=batch_id,
                                  hashes=self.hashes, rng=self._rng)
        finally:
            if bar:
                bar.close()

    def generate(
        self,
        prompts: PromptsLike,
        num_images: int | None = None,
        *,
        seed: int | None = None,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        scheduler: str | None = None,
        lora_scale: float | None = None,
        styles: Iterable[str] | None = None,
        magic: MagicMode | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        on_avatar: AvatarCallback | None = None,
        callback_on_step_end: Callable[..., Any] | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        keep_best: int | None = None,
        references: Any = None,
    ) -> AvatarPack:
        """Render ``num_images`` avatars from ``prompts`` into an :class:`AvatarPack`.

        ``prompts`` is a string, a :class:`Prompt`, a list of those (cycled to ``num_images``) or a
        :class:`PromptGenerator` (asked for ``num_images`` prompts, 40 by default). Image ``i`` gets
        seed ``seed + i``. With ``out_dir`` each image is written as soon as it is finished. Ctrl-C
        stops after the current batch is lost and returns the finished avatars (``pack.interrupted``).

        ``keep_best=N`` (needs the ``[likeness]`` extra) renders ``num_images`` candidates (twice ``N`` by
        default), scores each with face likeness against ``references`` (the subject's photos: a folder,
        paths, images or a :class:`~lensa_for_all.likeness.ReferenceSet`) and keeps the ``N`` best, each
        with its ``likeness``; they are written to ``out_dir`` (``avatars.json`` records the scores, the
        contact sheet is sorted by likeness) and passed to ``on_avatar`` once the candidates are scored.
        """
        settings = dict(negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, height=height, width=width, scheduler=scheduler,
                        lora_scale=lora_scale, styles=styles, magic=magic)
        if keep_best is not None:
            return self._generate_best(keep_best, references, prompts, num_images, seed=seed, settings=settings,
                                       batch_size=batch_size, progress=progress, on_avatar=on_avatar,
                                       callback_on_step_end=callback_on_step_end, out_dir=out_dir)
        with contextlib.ExitStack() as held:
            if out_dir is not None:  # one writer per folder: a second process fails at once, naming this one
                held.enter_context(RunLock(out_dir, what="lensa-for-all generate"))
            writer = PackWriter(out_dir) if out_dir is not None else None
            jobs, done = self._continue_pack(writer, prompts, num_images, seed, settings)
            position = {job.seed: i for i, job in enumerate(jobs)}  # image i has seed + i: unique within a pack
            interrupted = False
            try:
                for avatar in self._render([j for i, j in enumerate(jobs) if i not in done], batch_size=batch_size,
                                           progress=progress, callback_on_step_end=callback_on_step_end):
                    i = position[avatar.seed]
                    if writer:
                        writer.add(avatar, i)
                    done[i] = avatar
                    if on_avatar:
                        on_avatar(avatar)
            except KeyboardInterrupt:
                interrupted = True
                log.warning("Interrupted: keeping the %d of %d avatars already finished.", len(done), len(jobs))
            pack = AvatarPack([done[i] for i in sorted(done)], interrupted=interrupted, requested=len(jobs))
            if writer:
                writer.finish(pack)
            return pack

    def _generate_best(self, keep_best: int, references: Any, prompts: PromptsLike, num_images: int | None, *,
                       seed: int | None, settings: Mapping[str, Any], batch_size: int | None, progress: bool,
                       on_avatar: AvatarCallback | None, callback_on_step_end: Callable[..., Any] | None,
                       out_dir: str | os.PathLike[str] | None) -> AvatarPack:
        """``generate(keep_best=N)``: render the candidates in memory, keep the ``N`` most like the subject."""
        from ..likeness import FaceIdentity
        from .best import candidate_count, pick_best, reference_set

        count = candidate_count(keep_best, num_images)
        identity = FaceIdentity()  # without the extra this fails before anything is rendered
        refs = reference_set(references, identity)
        with contextlib.ExitStack() as held:
            if out_dir is not None:
                held.enter_context(RunLock(out_dir, what="lensa-for-all generate"))
            candidates = self.generate(prompts, count, seed=seed, batch_size=batch_size, progress=progress,
                                       callback_on_step_end=callback_on_step_end, **settings)
            kept = pick_best(list(candidates), keep_best, refs, identity)
            if kept:
                log.info("Kept the %d of %d candidates most like the subject (likeness %.2f to %.2f).", len(kept),
                         len(candidates), min(a.likeness or 0.0 for a in kept), max(a.likeness or 0.0 for a in kept))
            pack = AvatarPack(kept, interrupted=candidates.interrupted, requested=keep_best)
            if out_dir is not None:
                writer = PackWriter(out_dir)
                for i, avatar in enumerate(kept):
                    writer.add(avatar, i)
                writer.finish(pack, sort="likeness")
            for avatar in kept:
                if on_avatar:
                    on_avatar(avatar)
            return pack

    def _continue_pack(self, writer: PackWriter | None, prompts: PromptsLike, num_images: int | None,
                       seed: int | None, settings: Mapping[str, Any]) -> tuple[list[Job], dict[int, Avatar]]:
        """The jobs to render and the avatars already finished, by position.

        When ``out_dir`` holds an unfinished pack (a run stopped by Ctrl-C) whose jobs these settings
        reproduce, it is continued: its seed is reused unless another is given, the avatars it finished
        are kept, and only the missing ones are rendered. Anything else starts a new pack beside it.
        """
        pending = writer.pending if writer is not None else None
        if pending is not None and seed is not None and seed != pending["seed"]:
            pending = None
        # one seed draws the prompts and seeds the images, so the same pack can be planned again
        fresh = seed if seed is not None or writer is None else secrets.randbelow(2**31)
        jobs = self.plan(prompts, num_images, seed=pending["seed"] if pending else fresh, **settings)
        if pending is not None and pending.get("jobs") != _jobs_fingerprint(jobs):
            pending = None  # other settings: a new pack
            jobs = self.plan(prompts, num_images, seed=fresh, **settings)
        done: dict[int, Avatar] = {}
        if writer is None:
            return jobs, done
        if pending is not None:
            for i, job in enumerate(jobs):
                path = writer.adopt(i, job.seed)
                if path is not None:
                    done[i] = Avatar.from_png(path)
            log.warning("Continuing the unfinished pack in %s: %d of %d avatars are already there.",
                        writer.out_dir, len(done), len(jobs))
        if jobs:
            writer.begin({"seed": jobs[0].seed, "jobs": _jobs_fingerprint(jobs), "count": len(jobs)})
        return jobs, done

    def regenerate(self, source: Avatar | str | os.PathLike[str] | Mapping[str, Any]) -> Avatar:
        """Render an avatar again from its metadata (a PNG path, an :class:`Avatar` or its parameters).

        Bit-identical on the same device and precision. An image made in a batch of several is
        rendered with the other members of its batch, which its PNG (and the pack index) records.
        """
        if isinstance(source, Avatar):
            params = source.parameters()
        elif isinstance(source, Mapping):
            params = dict(source)
        else:
            params = read_png_parameters(source)
        if params.get("model") and params["model"] != self.name:
            warnings.warn(f"The image was made by {params['model']!r}, not {self.name!r}; it will differ.",
                          stacklevel=2)
        job = Job.from_parameters(params)
        jobs, position = [job], 0
        members = params.get("batch_members") or []
        if int(params.get("batch_size", 1)) > 1:
            if len(members) == int(params["batch_size"]):
                jobs = [attrs.evolve(job, prompt=m["prompt"], negative_prompt=m.get("negative_prompt", ""),
                                     seed=int(m["seed"]), style=m.get("style")) for m in members]
                position = int(params.get("batch_index", 0))
            else:
                warnings.warn("The image was made in a batch whose members are not recorded; rendering it "
                              "alone may differ in the last bits.", stacklevel=2)
        images = self.runner.run(jobs)
        return _avatar(jobs[position], images[position], model=self.name, batch=jobs, batch_index=position,
                       batch_id=params.get("batch_id"), hashes=self.hashes, rng=self._rng)

    @property
    def _rng(self) -> str | None:
        """A1111's ``RNG`` value: local rendering draws its noise from CPU generators."""
        return "CPU" if isinstance(self.runner, LocalRunner) else None


# -- helpers ----------------------------------------------------------------------------------------
def _jobs_fingerprint(jobs: Sequence[Job]) -> str:
    """What a pack's images will be (prompts, seeds, settings), to recognise the same pack on a rerun."""
    import hashlib
    import json

    text = json.dumps([attrs.asdict(j) for j in jobs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _family_label(pipe: Any) -> str:
    from ..families import FAMILIES

    return next((f.label for f in FAMILIES.values() if f.pipeline_class_name == type(pipe).__name__),
                type(pipe).__name__)


def _display_name(path: Path) -> str:
    return path.parent.name if path.name in ("model", "output", "model_dir") and path.parent.name else path.name


def _default_negative(subject_class: str) -> str:
    return StyleCatalogue.default().negative_base.get(subject_kind_for(subject_class), "")


def _from_pretrained(source: str, *, revision: str | None, **kwargs: Any) -> Any:
    """Load a pipeline with its family's class; a Hub id is taken from the local cache first, and the Hub is
    asked only if it answers."""
    from ..families import SD1
    from ..prompts.magic import hub_unreachable

    family = pipeline_family(source, revision) or SD1  # unreadable: SD 1.x/2.x, whose loader says what is wrong
    pipeline_class = family.pipeline_class()
    # the safety-checker switches exist only for the families that have one
    kwargs = {k: v for k, v in kwargs.items() if k not in ("safety_checker", "requires_safety_checker")
              or k in family.pipeline_extras}

    def load(local_only: bool) -> Any:
        with warnings.catch_warnings():
            # newer diffusers renamed torch_dtype to dtype; the old name works on every supported version
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            return pipeline_class.from_pretrained(source, revision=revision, local_files_only=local_only, **kwargs)

    try:
        try:
            pipe = load(local_only=True)
        except (OSError, ValueError):
            if Path(source).exists() or hub_unreachable():
                raise
            pipe = load(local_only=False)
    except (OSError, ValueError) as exc:
        msg = str(exc)
        if "safetensors" in msg.lower() and kwargs.get("use_safetensors"):
            raise PickleRefusedError(
                f"{source} has no safetensors weights, only pickled ones. Convert it, or pass allow_pickle=True "
                "if you trust the files."
            ) from exc
        raise ModelNotFoundError(
            f"Cannot load the {family.label} model {source!r}: {msg.splitlines()[0] if msg else exc!r}. "
            "Check the id or folder; offline, only models already in the Hugging Face cache load."
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _prepare_pipeline(pipe: Any, device: str, *, memory: str, compile: bool) -> Any:
    import torch

    # Text-to-image never encodes an image: drop the VAE encoder (about 130 MB of SD 1.5's fp32 weights).
    pipe.vae.encoder = None
    pipe.vae.quant_conv = None
    pipe.to(device)
    # SDPA is diffusers' default attention on torch 2; channels-last helps the UNet's convolutions on
    # GPUs (on CPU it measured no better here, so the CPU keeps the default layout).
    if not device.startswith("cpu"):
        pipe.unet.to(memory_format=torch.channels_last)
    else:
        pipe.vae.enable_slicing()  # CPU batches decode one image at a time: batch speed, batch-1 memory
    free = free_memory_bytes(device)
    low = memory == "low" or (memory == "auto" and free is not None and free < 6 * 1024**3)
    if low:
        pipe.enable_attention_slicing()
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()
        log.info("Low memory: attention slicing and VAE slicing/tiling on")
    if compile:
        pipe.unet = torch.compile(pipe.unet)
    return pipe


def _batches(jobs: Sequence[Job], batch_size: int | None,
             auto: Callable[[int, int], int]) -> Iterator[list[Job]]:
    """Batches of jobs that can share a pipeline call, filled in job order.

    Jobs with different settings (a style's own guidance scale, say) wait in their own bucket, so a
    mixed pack still renders in full batches; a bucket is rendered as soon as it is full.
    """
    buckets: dict[tuple[Any, ...], list[Job]] = {}
    for job in jobs:
        key = batch_key(job)
        bucket = buckets.setdefault(key, [])
        bucket.append(job)
        if len(bucket) >= (batch_size or auto(job.width, job.height)):
            yield buckets.pop(key)
    yield from (b for b in buckets.values() if b)


def _avatar(job: Job, image: Any, *, model: str, batch: Sequence[Job], batch_index: int,
            batch_id: str | None, hashes: ModelHashes | None = None, rng: str | None = None) -> Avatar:
    """The avatar of ``job``: its fields, the image, and where it came from."""
    hashes = hashes or ModelHashes()
    members = [{"prompt": j.prompt, "negative_prompt": j.negative_prompt, "seed": j.seed, "style": j.style}
               for j in batch] if len(batch) > 1 else []
    lora = job.lora_scale is not None
    return Avatar(
        image=image, **attrs.asdict(job, recurse=False), model=model,
        batch_size=len(batch), batch_index=batch_index, batch_id=batch_id, batch_members=members,
        model_hash=hashes.model_hash, lora_name=hashes.lora_name if lora else None,
        lora_hash=hashes.lora_hash if lora else None, rng=rng,
    )


class _ProgressBar:
    """A rich progress bar over images, on stderr."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("avatars"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                  transient=False)
        self._task = self._progress.add_task("avatars", total=total)
        self._progress.start()

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()
