"""Instance types, what they cost and how fast they train: the numbers behind ``max_cost_usd``.

Prices are SageMaker *training* on-demand rates in us-east-1 (USD per instance-hour) as listed on the
AWS pricing page when this table was checked (``PRICES_CHECKED``); other regions are scaled by a rough
factor. Speeds are LoRA steps per second for SD 1.5 at 512 px, batch 1, fp16, measured-order-of-magnitude
figures from public DreamBooth benchmarks; full fine-tuning and text-encoder training are slower by
fixed factors. The estimate is for deciding *whether* to launch, not an invoice: after the job the
actual cost comes from ``BillableTimeInSeconds`` (which already reflects the spot discount).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ConfigError

__all__ = [
    "InstanceSpec", "INSTANCE_TYPES", "CostEstimate", "estimate_cost", "actual_cost", "instance_spec",
    "PRICES_CHECKED", "TYPICAL_SPOT_DISCOUNT", "REGION_PRICE_FACTOR", "family_of_config",
]

PRICES_CHECKED = "2024-06, us-east-1"
TYPICAL_SPOT_DISCOUNT = 0.65  # managed spot training typically bills 60-70% less than on-demand
FIXED_OVERHEAD_S = 420.0  # instance start, image pull, base model download and load, artifact upload
REGION_PRICE_FACTOR: dict[str, float] = {
    "us-east-1": 1.0, "us-east-2": 1.0, "us-west-2": 1.0, "us-west-1": 1.17, "ca-central-1": 1.1,
    "eu-west-1": 1.12, "eu-west-2": 1.17, "eu-central-1": 1.2, "eu-north-1": 1.07, "eu-west-3": 1.18,
    "ap-northeast-1": 1.29, "ap-northeast-2": 1.25, "ap-southeast-1": 1.25, "ap-southeast-2": 1.25,
    "ap-south-1": 1.14, "sa-east-1": 1.6,
}
DEFAULT_REGION_FACTOR = 1.25


@attrs.frozen
class InstanceSpec:
    """One SageMaker GPU instance type."""

    name: str
    gpus: int
    gpu: str
    gpu_memory_gib: int  # per GPU
    vcpus: int
    memory_gib: int
    usd_per_hour: float  # training, on-demand, us-east-1
    lora_steps_per_s: float  # SD 1.5, 512 px, batch 1, fp16, one GPU
    class_images_per_s: float  # SD 1.5, 512 px, 25 steps, one GPU

    @property
    def total_gpu_memory_gib(self) -> int:
        return self.gpus * self.gpu_memory_gib


def _spec(name: str, gpus: int, gpu: str, mem: int, vcpus: int, ram: int, usd: float, sps: float,
          ips: float) -> tuple[str, InstanceSpec]:
    return name, InstanceSpec(name, gpus, gpu, mem, vcpus, ram, usd, sps, ips)


INSTANCE_TYPES: dict[str, InstanceSpec] = dict([
    _spec("ml.g4dn.xlarge", 1, "T4", 16, 4, 16, 0.736, 1.3, 0.25),
    _spec("ml.g4dn.2xlarge", 1, "T4", 16, 8, 32, 0.94, 1.3, 0.25),
    _spec("ml.g4dn.4xlarge", 1, "T4", 16, 16, 64, 1.505, 1.3, 0.25),
    _spec("ml.g4dn.12xlarge", 4, "T4", 16, 48, 192, 4.89, 1.3, 0.25),
    _spec("ml.g5.xlarge", 1, "A10G", 24, 4, 16, 1.408, 3.0, 0.6),
    _spec("ml.g5.2xlarge", 1, "A10G", 24, 8, 32, 1.515, 3.0, 0.6),
    _spec("ml.g5.4xlarge", 1, "A10G", 24, 16, 64, 2.03, 3.0, 0.6),
    _spec("ml.g5.8xlarge", 1, "A10G", 24, 32, 128, 3.06, 3.0, 0.6),
    _spec("ml.g5.12xlarge", 4, "A10G", 24, 48, 192, 7.09, 3.0, 0.6),
    _spec("ml.g5.48xlarge", 8, "A10G", 24, 192, 768, 20.36, 3.0, 0.6),
    _spec("ml.p3.2xlarge", 1, "V100", 16, 8, 61, 3.825, 2.5, 0.5),
    _spec("ml.p3.8xlarge", 4, "V100", 16, 32, 244, 14.688, 2.5, 0.5),
    _spec("ml.p4d.24xlarge", 8, "A100", 40, 96, 1152, 37.688, 6.0, 1.2),
])


def instance_spec(instance_type: str) -> InstanceSpec:
    """The spec of ``instance_type``; a :class:`ConfigError` listing the known types otherwise."""
    spec = INSTANCE_TYPES.get(instance_type)
    if spec is None:
        hint = " SageMaker instance types start with 'ml.'." if not instance_type.startswith("ml.") else ""
        raise ConfigError(
            f"instance_type {instance_type!r} is not a known GPU training instance.{hint} Known: "
            f"{', '.join(INSTANCE_TYPES)}. (Stable Diffusion training on CPU instances is impractically slow.)"
        )
    return spec


@attrs.frozen
class CostEstimate:
    """What a training job is expected to take and cost, before launch."""

    instance_type: str
    region: str
    spot: bool
    train_steps: int
    class_images: int
    seconds: float
    on_demand_usd: float
    spot_usd: float

    @property
    def usd(self) -> float:
        """The expected bill for the chosen purchase option."""
        return self.spot_usd if self.spot else self.on_demand_usd

    def __str__(self) -> str:
        minutes = self.seconds / 60
        option = f"spot ~${self.spot_usd:.2f} (on-demand would be ${self.on_demand_usd:.2f})" if self.spot else (
            f"on-demand ${self.on_demand_usd:.2f} (spot would be ~${self.spot_usd:.2f})")
        extra = f" + {self.class_images} class images" if self.class_images else ""
        return (f"Estimated {minutes:.0f} min on {self.instance_type} in {self.region} "
                f"({self.train_steps} steps{extra}): {option}; prices as of {PRICES_CHECKED}")


def _get(config: Any, name: str, default: Any) -> Any:
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def _train_steps(config: Any, num_photos: int) -> int:
    resolve = getattr(config, "resolve_max_train_steps", None)
    if callable(resolve):
        return int(resolve(num_photos))
    steps = _get(config, "max_train_steps", None)
    if steps:
        return int(steps)
    per_photo = int(_get(config, "steps_per_photo", 100))
    lo, hi = int(_get(config, "min_auto_steps", 400)), int(_get(config, "max_auto_steps", 1600))
    return max(lo, min(hi, per_photo * max(num_photos, 1)))


def family_of_config(config: Any) -> Any:
    """The base model's family when it can be told offline; SD 1.x/2.x otherwise (the speeds' reference)."""
    from ..families import SD1, family_hint

    base = _get(config, "base_model", None)
    forced = str(_get(config, "model_family", "auto") or "auto")
    return (family_hint(str(base), _get(config, "revision", None), forced) if base or forced != "auto" else None) or SD1


def estimate_cost(config: Any, num_photos: int, *, instance_type: str = "ml.g5.2xlarge", spot: bool = True,
                  region: str = "us-east-1") -> CostEstimate:
    """Estimate duration and cost of training ``config`` (a ``TrainingConfig`` or its dict) on ``num_photos``.

    Duration = fixed overhead + class-image generation (when prior preservation is on) + steps / speed,
    where speed is the instance's LoRA speed scaled by resolution, method and text-encoder training.
    """
    if num_photos < 1:
        raise ConfigError(f"num_photos must be at least 1, got {num_photos}")
    spec = instance_spec(instance_type)
    steps = _train_steps(config, num_photos)
    batch = int(_get(config, "train_batch_size", 1)) * int(_get(config, "gradient_accumulation_steps", 1))
    resolution = int(_get(config, "resolution", 512))
    unet_cost = family_of_config(config).unet_cost_factor  # SDXL's UNet does about 3x SD 1.5's work per latent pixel
    speed = spec.lora_steps_per_s * (512 / resolution) ** 2 / max(batch, 1) / unet_cost
    if _get(config, "method", "lora") == "full":
        speed *= 0.45
    if _get(config, "train_text_encoder", False):
        speed *= 0.85
    class_images = int(_get(config, "num_class_images", 0)) if _get(config, "with_prior_preservation", False) else 0
    if class_images:
        speed *= 0.6  # instance and class latents in one forward: about twice the work per step
    gen_speed = spec.class_images_per_s * spec.gpus * (512 / resolution) ** 2 / unet_cost
    gen_steps = int(_get(config, "class_image_inference_steps", 25))
    seconds = FIXED_OVERHEAD_S + steps / speed + class_images * (gen_steps / 25) / gen_speed
    factor = REGION_PRICE_FACTOR.get(region, DEFAULT_REGION_FACTOR)
    on_demand = seconds / 3600 * spec.usd_per_hour * factor
    return CostEstimate(instance_type=instance_type, region=region, spot=spot, train_steps=steps,
                        class_images=class_images, seconds=seconds, on_demand_usd=round(on_demand, 4),
                        spot_usd=round(on_demand * (1 - TYPICAL_SPOT_DISCOUNT), 4))


def actual_cost(description: Mapping[str, Any], *, region: str = "us-east-1") -> float | None:
    """The cost of a finished (or running) job from ``DescribeTrainingJob``.

    SageMaker bills ``BillableTimeInSeconds`` at the on-demand rate per instance; for managed spot that
    figure is already reduced by the savings. Jobs still running (no billable time yet) are priced by the
    time since training started: at the on-demand rate, or for spot jobs with the same typical discount
    the estimate assumed, so the running cost guard and the launch estimate agree.
    """
    resource = description.get("ResourceConfig", {})
    spec = INSTANCE_TYPES.get(str(resource.get("InstanceType", "")))
    if spec is None:
        return None
    count = int(resource.get("InstanceCount", 1) or 1)
    seconds = description.get("BillableTimeInSeconds")
    discount = 0.0
    if seconds is None and description.get("EnableManagedSpotTraining"):
        discount = TYPICAL_SPOT_DISCOUNT
    if seconds is None:
        seconds = description.get("TrainingTimeInSeconds")
    if seconds is None:
        start, end = description.get("TrainingStartTime"), description.get("TrainingEndTime")
        if start is None:
            return 0.0
        if end is None:
            import datetime as _dt

            end = _dt.datetime.now(tz=start.tzinfo)
        seconds = max(0.0, (end - start).total_seconds())
    factor = REGION_PRICE_FACTOR.get(region, DEFAULT_REGION_FACTOR)
    return round(math.ceil(float(seconds)) / 3600 * spec.usd_per_hour * factor * count * (1 - discount), 4)
