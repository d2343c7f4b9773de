"""Endpoint handler for the Hugging Face inference container (shipped as ``code/inference.py`` in model.tar.gz).

It renders with :class:`~lensa_for_all.generation.AvatarModel`, the class local generation uses, so an
endpoint has the same sampler (DPM++ 2M Karras, 25 steps), subject-aware negative prompt, 77-token
prompt fitting and PNG metadata as ``lensa-for-all generate``. The training launcher copies the library's
generation code into ``code/lensa_for_all`` beside this file (the packaged copy wins over any installed
one, as in the training container) and the pinned stack into ``code/requirements.txt``, which the
container installs before it imports this module. It is generation code (it renders), kept in the
package as :mod:`lensa_for_all.generation.endpoint_handler`; ``SageMakerBackend`` ships this file by path.

JSON contract (also used by :class:`lensa_for_all.backends.endpoint.Endpoint`; the request's parameters are
a :class:`~lensa_for_all.generation.job.Job`'s fields, see ``generation.endpoint_runner.endpoint_params``)::

    request  {"inputs": "<prompt>", "parameters": {"negative_prompt", "num_inference_steps",
              "guidance_scale", "height", "width", "seed", "num_images", "scheduler"}}
    response {"images": ["<base64 PNG>", ...], "seeds": [...], "parameters": {...},
              "metadata": [{<the image's generation parameters>}, ...]}

Parameters left out take ``AvatarModel``'s defaults. Image ``i`` is generated alone with seed
``seed + i``, so any single image can be regenerated exactly; each PNG carries its parameters.
"""

from __future__ import annotations

import base64
import json
import os
import random
import sys
import tempfile
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(_HERE, "lensa_for_all")) and _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # code/lensa_for_all, shipped beside this file in model.tar.gz

JSON = "application/json"
DEFAULTS: dict[str, Any] = {
    "negative_prompt": None, "num_inference_steps": None, "guidance_scale": None, "height": None, "width": None,
    "seed": None, "num_images": 1, "scheduler": None,
}
LIMITS = {"num_images": (1, 8), "num_inference_steps": (1, 150), "height": (64, 1024), "width": (64, 1024)}


class BadRequest(ValueError):
    """The request does not follow the JSON contract; the message is returned to the caller."""


def _scheduler_names() -> list[str]:
    from lensa_for_all.generation.schedulers import scheduler_names

    return scheduler_names()


def model_fn(model_dir: str, context: Any = None) -> Any:
    """Load the trained model (a full pipeline folder, or a LoRA + manifest on its base) as an AvatarModel."""
    from lensa_for_all.backends.endpoint_secrets import load_hf_token
    from lensa_for_all.errors import ModelNotFoundError
    from lensa_for_all.generation import AvatarModel

    load_hf_token()  # a private base model's token, from the encrypted S3 object deploy() wrote
    is_pipeline = os.path.isfile(os.path.join(model_dir, "model_index.json"))
    is_lora = os.path.isfile(os.path.join(model_dir, "lensa_manifest.json"))
    if not (is_pipeline or is_lora):
        raise RuntimeError(f"{model_dir} holds neither a diffusers pipeline nor a LoRA with lensa_manifest.json")
    try:
        return AvatarModel.load(model_dir, safety_checker=None)
    except ModelNotFoundError as exc:
        raise RuntimeError(str(exc)) from exc


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
    names = _scheduler_names()
    if merged["scheduler"] is not None and merged["scheduler"] not in names:
        raise BadRequest(f"scheduler must be one of {names}, got {merged['scheduler']!r}")
    guidance = merged["guidance_scale"]
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))):
        raise BadRequest(f"guidance_scale must be a number, got {guidance!r}")
    if merged["seed"] is not None and (not isinstance(merged["seed"], int) or isinstance(merged["seed"], bool)):
        raise BadRequest(f"seed must be an integer, got {merged['seed']!r}")
    if merged["negative_prompt"] is not None and not isinstance(merged["negative_prompt"], str):
        raise BadRequest("negative_prompt must be a string")
    return {"inputs": data["inputs"], "parameters": merged}


def _png_base64(avatar: Any) -> str:
    """The PNG exactly as ``Avatar.save`` writes it (with its parameters text), base64-encoded."""
    with tempfile.TemporaryDirectory(prefix="lensa-endpoint-") as tmp:
        path = avatar.save(os.path.join(tmp, "avatar.png"))
        with open(path, "rb") as fh:
            return base64.b64encode(fh.read()).decode("ascii")


def predict_fn(data: dict[str, Any], model: Any) -> dict[str, Any]:
    """Generate ``num_images`` images; each with its own seed so it can be reproduced alone."""
    params = dict(data["parameters"])
    base_seed = params["seed"] if params["seed"] is not None else random.SystemRandom().randrange(2**31)
    params["seed"] = base_seed
    # one image per pipeline call: batched kernels round differently, and each image must be reproducible
    pack = model.generate(data["inputs"], params["num_images"], seed=base_seed,
                          negative_prompt=params["negative_prompt"],
                          num_inference_steps=params["num_inference_steps"],
                          guidance_scale=params["guidance_scale"], height=params["height"], width=params["width"],
                          scheduler=params["scheduler"], batch_size=1)
    avatars = list(pack)
    if avatars:  # report the values used, defaults filled in
        first = avatars[0]
        params.update(negative_prompt=first.negative_prompt, num_inference_steps=first.num_inference_steps,
                      guidance_scale=first.guidance_scale, height=first.height, width=first.width,
                      scheduler=first.scheduler)
    return {"images": [_png_base64(a) for a in avatars], "seeds": [a.seed for a in avatars],
            "parameters": params, "metadata": [a.parameters() for a in avatars]}


def output_fn(prediction: dict[str, Any], accept: str = JSON) -> bytes:
    if accept and accept not in (JSON, "*/*") and not accept.startswith(JSON):
        raise BadRequest(f"Accept must be {JSON}, got {accept}")
    return json.dumps(prediction, default=str).encode("utf-8")
