"""Renders jobs on a deployed SageMaker endpoint, through :class:`lensa_for_all.backends.endpoint.Endpoint`.

One request per job (``num_images=1`` with the job's own seed), so every image keeps its own seed and
metadata exactly as a local run would record them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError, EndpointError
from .job import Job

__all__ = ["EndpointRunner", "endpoint_params", "ENDPOINT_JOB_FIELDS"]

log = logging.getLogger(__name__)


# The Job fields an endpoint request carries (the prompt goes in ``inputs``; the handler reads no LoRA scale or
# style): the fixed JSON contract of :mod:`lensa_for_all.generation.endpoint_handler`, values taken from the Job.
ENDPOINT_JOB_FIELDS = ("negative_prompt", "num_inference_steps", "guidance_scale", "height", "width", "seed",
                       "scheduler")


def endpoint_params(job: Job) -> dict[str, Any]:
    """The ``parameters`` of the endpoint request for ``job``: its contract fields, one image."""
    return {**{name: getattr(job, name) for name in ENDPOINT_JOB_FIELDS}, "num_images": 1}


class EndpointRunner:
    """Sends each job to an :class:`Endpoint` (a name, or an ``Endpoint`` such as ``Endpoint.from_name``)."""

    is_lora = False
    tokenizer = None

    def __init__(self, endpoint: Any, *, region: str | None = None,
                 default_size: tuple[int, int] | None = None) -> None:
        from ..backends.endpoint import Endpoint

        if isinstance(endpoint, str):
            if not endpoint:
                raise ConfigError("An endpoint name is required.")
            endpoint = Endpoint(endpoint, region=region)
        self.endpoint = endpoint
        self.name = f"endpoint:{endpoint.name}"
        self.default_size = default_size or _native_size(endpoint)

    def auto_batch_size(self, width: int, height: int) -> int:
        return 1

    def run(self, jobs: Sequence[Job], *, callback_on_step_end: Callable[..., Any] | None = None) -> list[Any]:
        images = []
        for job in jobs:
            response = self.endpoint.invoke(job.prompt, **endpoint_params(job))
            if not response.images:
                raise EndpointError(f"Endpoint {self.endpoint.name!r} returned no image for {job.prompt!r}.")
            if response.seeds and int(response.seeds[0]) != job.seed:
                raise EndpointError(
                    f"Endpoint {self.endpoint.name!r} used seed {response.seeds[0]} instead of {job.seed}; "
                    "its handler is not the lensa-for-all one, so images would not be reproducible."
                )
            images.append(response.images[0].convert("RGB"))
        return images


def _native_size(endpoint: Any) -> tuple[int, int]:
    """The deployed model's native size, from the family tag ``SageMakerBackend.deploy`` puts on the endpoint.

    An endpoint deployed from a bare ``s3://`` URI has no tag; it is taken for SD 1.x (512 px), as is one whose
    tags cannot be read, with a warning that says how to choose the size.
    """
    from ..backends.endpoint import FAMILY_TAG
    from ..families import FAMILIES, SD1

    try:
        family = FAMILIES.get(str(endpoint.tags().get(FAMILY_TAG, SD1.name)))
    except Exception as exc:  # no permission for ListTags, a test double without tags(): keep working
        log.warning("Could not read endpoint %s's tags (%s); rendering at 512 px. Pass default_size=(w, h) to "
                    "AvatarModel.from_endpoint to choose.", getattr(endpoint, "name", endpoint), exc)
        family = SD1
    side = int((family or SD1).default_resolution)
    return (side, side)
