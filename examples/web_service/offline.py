"""Run the web-service example end to end on this machine: no AWS account, no GPU, no download.

A local moto server stands in for AWS (``local_aws``), a tiny random-weight model for Stable Diffusion,
and the SageMaker training container is played here (moto records jobs but runs nothing). The app itself
is unchanged: only its backend factory is swapped for :func:`played_backends`. The avatars are coloured
noise (random weights); every step runs for real. About a minute on 2 CPU cores::

    python examples/web_service/offline.py

With AWS credentials, the real service is ``uvicorn --factory app:create_app`` (see README.md).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import app  # noqa: E402  (this folder's app.py)

ROLE = "arn:aws:iam::123456789012:role/LensaForAllSageMakerRole"


def played_backends(settings: app.Settings, containers: Path) -> Callable[[str], Any]:
    """The app's own SageMaker settings for each request, on the test kit's ``OfflineSageMakerBackend``.

    Its jobs' containers run on this machine; like SageMaker, a job whose container exits with an error is
    then reported ``Failed``, with the container's failure file as the ``FailureReason``.
    """
    from lensa_for_all.testing.sagemaker import OfflineSageMakerBackend

    def make_backend(job_id: str) -> Any:
        backend = OfflineSageMakerBackend(containers_dir=containers, **settings.sagemaker_options(job_id))
        backend.sleep = lambda _s: None  # moto answers at once
        return backend

    return make_backend


def tiny_settings(work_dir: Path, tiny_model: Path, **overrides: Any) -> app.Settings:
    """Settings that fit the 64 px tiny model: a few training steps, two avatars; ``overrides`` replace any."""
    values: dict[str, Any] = dict(
        work_dir=work_dir, role=ROLE, region="us-east-1", base_model=str(tiny_model), max_train_steps=4,
        num_images=2,
        training={"resolution": 64, "lora_rank": 4, "mixed_precision": "no", "with_prior_preservation": False,
                  "train_text_encoder": False, "learning_rate": 1e-3, "seed": 7},
        generation={"num_inference_steps": 2, "seed": 11},
        sagemaker={"poll_interval_s": 0},
    )
    values.update(overrides)
    return app.Settings(**values)


def main() -> None:
    from fastapi.testclient import TestClient

    from lensa_for_all.testing import make_photos, make_tiny_sd
    from lensa_for_all.testing.sagemaker import local_aws

    with tempfile.TemporaryDirectory() as tmp, local_aws():
        root = Path(tmp)
        settings = tiny_settings(root / "service", make_tiny_sd(root / "tiny-sd", "tiny"))
        photos = make_photos(root / "my-photos", 4, size=(320, 400))
        service = app.create_app(settings, make_backend=played_backends(settings, root / "containers"))
        with TestClient(service) as client:
            answer = client.post("/avatars", data={"subject_class": "person"},
                                 files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos])
            print("POST /avatars ->", answer.status_code, answer.headers["location"])
            job = answer.headers["location"]
            seen = None
            while True:
                status = client.get(job).json()
                if status["status"] != seen:
                    seen = status["status"]
                    print(f"GET {job} -> {seen}")
                if seen in ("done", "failed"):
                    break
                time.sleep(0.2)
            if seen == "failed":
                raise SystemExit(f"failed: {status['reason']}")
            print(f"SageMaker job {status['job_name']}, cost ${status['cost_usd']:.2f}")
            for url in [*status["images"], status["contact_sheet"]]:
                got = client.get(url)
                print(f"GET {url} -> {got.status_code} {got.headers['content-type']}, {len(got.content)} bytes")


if __name__ == "__main__":
    main()
