"""Renders jobs on a deployed SageMaker endpoint through the library's fixed JSON contract.

Request ``{"inputs": prompt, "parameters": {negative_prompt, num_inference_steps, guidance_scale,
height, width, seed, num_images, scheduler}}``; response ``{"images": [base64 PNG, ...], "seeds":
[...], "parameters": {...}}``. One request per job, so every image keeps its own seed.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import AWSConfigurationError, ConfigError, EndpointError
from .runner import Job

__all__ = ["EndpointRunner", "request_body", "decode_response"]


def request_body(job: Job) -> dict[str, Any]:
    return {
        "inputs": job.prompt,
        "parameters": {
            "negative_prompt": job.negative_prompt, "num_inference_steps": job.num_inference_steps,
            "guidance_scale": job.guidance_scale, "height": job.height, "width": job.width, "seed": job.seed,
            "num_images": 1, "scheduler": job.scheduler,
        },
    }


def decode_response(payload: bytes | str, endpoint: str) -> list[Any]:
    """The images of an endpoint response, as PIL images."""
    from PIL import Image

    try:
        data = json.loads(payload)
        images = [Image.open(io.BytesIO(base64.b64decode(s))) for s in data["images"]]
        for im in images:
            im.load()
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise EndpointError(
            f"Endpoint {endpoint!r} answered with something that is not the lensa-for-all response "
            f"({{'images': [base64 PNG, ...]}}): {exc}. Is it a lensa-for-all endpoint?"
        ) from exc
    return [im.convert("RGB") for im in images]


class EndpointRunner:
    """Invokes ``sagemaker-runtime`` for each job (boto3 from the ``[aws]`` extra)."""

    is_lora = False
    tokenizer = None

    def __init__(self, endpoint_name: str, *, region: str | None = None,
                 default_size: tuple[int, int] = (512, 512), timeout_s: float = 120.0) -> None:
        if not endpoint_name:
            raise ConfigError("An endpoint name is required.")
        self.endpoint_name = endpoint_name
        self.name = f"endpoint:{endpoint_name}"
        self.default_size = default_size
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise AWSConfigurationError(
                'Generating through a SageMaker endpoint needs boto3: pip install "lensa-for-all[aws]"'
            ) from exc
        self._client = boto3.client(
            "sagemaker-runtime", region_name=region,
            config=Config(read_timeout=timeout_s, retries={"max_attempts": 2, "mode": "standard"}),
        )

    def auto_batch_size(self, width: int, height: int) -> int:
        return 1

    def run(self, jobs: Sequence[Job], *, callback_on_step_end: Callable[..., Any] | None = None) -> list[Any]:
        import botocore.exceptions as bexc

        images = []
        for job in jobs:
            try:
                resp = self._client.invoke_endpoint(
                    EndpointName=self.endpoint_name, ContentType="application/json", Accept="application/json",
                    Body=json.dumps(request_body(job)).encode(),
                )
            except bexc.NoCredentialsError as exc:
                raise AWSConfigurationError("No AWS credentials found; run `aws configure` or set AWS_PROFILE.") from exc
            except (bexc.ClientError, bexc.BotoCoreError) as exc:
                raise EndpointError(f"Invoking endpoint {self.endpoint_name!r} failed: {exc}") from exc
            got = decode_response(resp["Body"].read(), self.endpoint_name)
            if not got:
                raise EndpointError(f"Endpoint {self.endpoint_name!r} returned no image.")
            images.append(got[0])
        return images
