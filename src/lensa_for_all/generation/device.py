"""Device and precision choice for inference, and how much memory there is to spend on a batch."""

from __future__ import annotations

from typing import Any

import attrs

from ..errors import ConfigError

__all__ = ["DeviceChoice", "choose_device", "parse_dtype", "free_memory_bytes"]

_DTYPES = {
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}


@attrs.frozen
class DeviceChoice:
    """Where and in which precision the pipeline runs."""

    device: str  # "cuda", "cuda:1", "mps", "cpu"
    dtype: Any  # a torch.dtype

    @property
    def kind(self) -> str:
        return self.device.split(":")[0]


def parse_dtype(dtype: Any) -> Any:
    """A ``torch.dtype`` from a name ("fp16", "bf16", "fp32", ...) or a ``torch.dtype``."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ConfigError(f"Unknown dtype {dtype!r}; use fp16, bf16 or fp32.")
    return getattr(torch, _DTYPES[key])


def choose_device(device: str | None = None, dtype: Any = None) -> DeviceChoice:
    """CUDA in fp16, else Apple MPS in fp16, else CPU in fp32; ``device``/``dtype`` override.

    fp16 halves memory and is what SD 1.x/2.x were released for; CPUs have no fast fp16 path, so
    they stay in fp32.
    """
    import torch

    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    device = str(device)
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' was asked for but PyTorch sees no CUDA GPU; install a CUDA build "
                          "of torch or use device='cpu'.")
    if kind not in ("cuda", "mps", "cpu", "xpu"):
        raise ConfigError(f"Unknown device {device!r}; use cuda, mps or cpu.")
    resolved = parse_dtype(dtype)
    if resolved is None:
        resolved = torch.float16 if kind in ("cuda", "mps", "xpu") else torch.float32
    return DeviceChoice(device, resolved)


def free_memory_bytes(device: str) -> int | None:
    """Free accelerator memory on ``device`` in bytes, or ``None`` where it cannot be known (CPU, MPS)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return None
