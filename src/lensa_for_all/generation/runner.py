"""What turns a batch of fully specified jobs into images: a local diffusers pipeline.

:class:`AvatarModel` resolves prompts, seeds and defaults into :class:`~lensa_for_all.generation.job.Job`
objects and hands batches of them to a runner; the runner only renders. The endpoint runner has the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import ConfigError, GenerationError, OutOfMemoryError
from .device import DeviceChoice, free_memory_bytes
from .job import Job, batch_key
from .schedulers import canonical_name, make_scheduler

# Job and batch_key live in job.py; re-exported here, where they were defined before 0.2.0
__all__ = ["Job", "Runner", "LocalRunner", "batch_key"]

log = logging.getLogger(__name__)

StepCallback = Callable[..., Any]


class Runner(Protocol):
    name: str
    default_size: tuple[int, int]
    is_lora: bool

    @property
    def tokenizer(self) -> Any: ...

    def auto_batch_size(self, width: int, height: int) -> int: ...

    def run(self, jobs: Sequence[Job], *, callback_on_step_end: StepCallback | None = None) -> list[Any]: ...


class LocalRunner:
    """Renders jobs with a loaded ``StableDiffusionPipeline`` on this machine."""

    def __init__(self, pipe: Any, device: DeviceChoice, *, name: str, is_lora: bool = False,
                 default_size: tuple[int, int] | None = None) -> None:
        self.pipe = pipe
        self.device = device
        self.name = name
        self.is_lora = is_lora
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self._schedulers: dict[str, Any] = {}
        if default_size is None:
            side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
            default_size = (side, side)
        self.default_size = default_size

    @property
    def tokenizer(self) -> Any:
        """What prompts are counted with: the pipeline's tokenizer, or both of SDXL's (a prompt must fit both)."""
        second = getattr(self.pipe, "tokenizer_2", None)
        if second is None:
            return self.pipe.tokenizer
        from ..prompts.tokens import TokenizerPair

        return TokenizerPair(self.pipe.tokenizer, second)

    @property
    def prediction_type(self) -> str:
        return str(self._base_scheduler_config.get("prediction_type", "epsilon"))

    def auto_batch_size(self, width: int, height: int) -> int:
        """How many images one pipeline call renders by default.

        CUDA: as many as half the free memory holds (at most 8). CPU and MPS: 1, where batching
        saves little at full size and costs memory (measured: 4 images of 128 px per call were 1.3x
        faster on CPU but raised peak RSS; see benchmarks/README.md).
        """
        free = free_memory_bytes(self.device.device)
        if free is None:
            return 1
        bytes_per_elem = 2 if self.device.dtype.itemsize <= 2 else 4
        per_image = 0.35 * 1024**3 * bytes_per_elem * (width * height) / (512 * 512)
        return int(max(1, min(8, (free * 0.5) // per_image)))

    def _scheduler(self, name: str) -> Any:
        key = canonical_name(name)
        if key not in self._schedulers:
            self._schedulers[key] = make_scheduler(key, self._base_scheduler_config)
        return self._schedulers[key]

    def run(self, jobs: Sequence[Job], *, callback_on_step_end: StepCallback | None = None) -> list[Any]:
        import torch

        if not jobs:
            return []
        first = jobs[0]
        if any(batch_key(j) != batch_key(first) for j in jobs):
            raise ValueError("jobs in one batch must share steps, guidance, scheduler, size and LoRA scale")
        if first.width % 8 or first.height % 8:
            raise ConfigError(f"width and height must be multiples of 8, not {first.width}x{first.height}.")
        self.pipe.scheduler = self._scheduler(first.scheduler)
        # Noise comes from CPU generators so a seed gives the same image on any run of this device.
        generators = [torch.Generator("cpu").manual_seed(int(j.seed)) for j in jobs]
        kwargs: dict[str, Any] = {}
        if self.is_lora and first.lora_scale is not None:
            kwargs["cross_attention_kwargs"] = {"scale": float(first.lora_scale)}
        if callback_on_step_end is not None:
            kwargs["callback_on_step_end"] = callback_on_step_end
        try:
            with torch.inference_mode():
                out = self.pipe(
                    prompt=[j.prompt for j in jobs],
                    negative_prompt=[j.negative_prompt for j in jobs],
                    num_inference_steps=first.num_inference_steps,
                    guidance_scale=first.guidance_scale,
                    height=first.height,
                    width=first.width,
                    generator=generators,
                    output_type="pil",
                    **kwargs,
                )
        except torch.cuda.OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"The GPU ran out of memory rendering {len(jobs)} image(s) at {first.width}x{first.height}. "
                "Try, in order: batch_size=1, memory='low' (attention/VAE slicing), a smaller size."
            ) from exc
        images = list(out.images)
        if len(images) != len(jobs):  # pragma: no cover - diffusers contract
            raise GenerationError(f"expected {len(jobs)} images, got {len(images)}")
        return images

