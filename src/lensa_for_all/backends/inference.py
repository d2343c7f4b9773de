"""Endpoint handler for the Hugging Face inference container (shipped as ``code/inference.py`` in model.tar.gz).

It is self-contained on purpose (only diffusers, torch and Pillow, which the container has or installs
from ``code/requirements.txt``): the endpoint must start without this library being installed.

JSON contract (also used by :class:`lensa_for_all.backends.endpoint.Endpoint`)::

    request  {"inputs": "<prompt>", "parameters": {"negative_prompt", "num_inference_steps",
              "guidance_scale", "height", "width", "seed", "num_images", "scheduler"}}
    response {"images": ["<base64 PNG>", ...], "seeds": [...], "parameters": {...}}

Image ``i`` is generated alone with seed ``seed + i``, so any single image can be regenerated exactly.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
from typing import Any

JSON = "application/json"
DEFAULTS: dict[str, Any] = {
    "negative_prompt": None, "num_inference_steps": 30, "guidance_scale": 7.0, "height": None, "width": None,
    "seed": None, "num_images": 1, "scheduler": "dpmpp_2m_karras",
}
LIMITS = {"num_images": (1, 8), "num_inference_steps": (1, 150), "height": (64, 1024), "width": (64, 1024)}
# name -> (diffusers class, config overrides). The same table as lensa_for_all.generation.schedulers (a test
# keeps them equal), copied because this file must run in the container without the library installed.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
}


class BadRequest(ValueError):
    """The request does not follow the JSON contract; the message is returned to the caller."""


def _scheduler(name: str, config: Any) -> Any:
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(config, **overrides)


def model_fn(model_dir: str, context: Any = None) -> Any:
    """Load the trained model: a full diffusers pipeline folder, or a LoRA on its base model."""
    import torch
    from diffusers import StableDiffusionPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    manifest_path = os.path.join(model_dir, "lensa_manifest.json")
    manifest: dict[str, Any] = {}
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    if os.path.isfile(os.path.join(model_dir, "model_index.json")):
        pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=dtype, safety_checker=None)
    elif manifest.get("method") == "lora" and manifest.get("base_model"):
        pipe = StableDiffusionPipeline.from_pretrained(manifest["base_model"], revision=manifest.get("revision"),
                                                       torch_dtype=dtype, safety_checker=None)
        pipe.load_lora_weights(model_dir, weight_name="pytorch_lora_weights.safetensors")
        pipe.fuse_lora()
    else:
        raise RuntimeError(f"{model_dir} holds neither a diffusers pipeline nor a LoRA with lensa_manifest.json")
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    pipe.lensa_default_size = int(manifest.get("resolution") or pipe.unet.config.sample_size * pipe.vae_scale_factor)
    return pipe


def input_fn(input_data: bytes | str, content_type: str = JSON) -> dict[str, Any]:
    """Parse and validate a request; unknown parameters and out-of-range values are refused."""
    if content_type and content_type.split(";")[0].strip() != JSON:
        raise BadRequest(f"Content type must be {JSON}, got {content_type}")
    try:
        data = json.loads(input_data)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"Request body is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), str) or not data["inputs"].strip():
        raise BadRequest('Request must be {"inputs": "<prompt>", "parameters": {...}}')
    params = data.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest('"parameters" must be an object')
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise BadRequest(f"Unknown parameter(s) {unknown}; known: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    for name, (lo, hi) in LIMITS.items():
        value = merged[name]
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise BadRequest(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        if name in ("height", "width") and value % 8:
            raise BadRequest(f"{name} must be a multiple of 8, got {value}")
    if merged["scheduler"] not in SCHEDULERS:
        raise BadRequest(f"scheduler must be one of {list(SCHEDULERS)}, got {merged['scheduler']!r}")
    if merged["seed"] is not None and (not isinstance(merged["seed"], int) or isinstance(merged["seed"], bool)):
        raise BadRequest(f"seed must be an integer, got {merged['seed']!r}")
    return {"inputs": data["inputs"], "parameters": merged}


def predict_fn(data: dict[str, Any], model: Any) -> dict[str, Any]:
    """Generate ``num_images`` images; each with its own seed so it can be reproduced alone."""
    import torch

    params = dict(data["parameters"])
    size = getattr(model, "lensa_default_size", 512)
    params["height"] = params["height"] or size
    params["width"] = params["width"] or size
    base_seed = params["seed"] if params["seed"] is not None else random.SystemRandom().randrange(2**31)
    seeds = [base_seed + i for i in range(params["num_images"])]
    params["seed"] = base_seed
    model.scheduler = _scheduler(params["scheduler"], model.scheduler.config)
    device = getattr(model, "device", torch.device("cpu"))
    images = []
    for seed in seeds:  # one at a time: batched kernels round differently, and each image must be reproducible
        generator = torch.Generator(device="cpu" if device.type == "mps" else device).manual_seed(seed)
        image = model(
            prompt=data["inputs"], negative_prompt=params["negative_prompt"],
            num_inference_steps=params["num_inference_steps"], guidance_scale=params["guidance_scale"],
            height=params["height"], width=params["width"], generator=generator,
        ).images[0]
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        images.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return {"images": images, "seeds": seeds, "parameters": params}


def output_fn(prediction: dict[str, Any], accept: str = JSON) -> bytes:
    if accept and accept not in (JSON, "*/*") and not accept.startswith(JSON):
        raise BadRequest(f"Accept must be {JSON}, got {accept}")
    return json.dumps(prediction).encode("utf-8")
