"""Serve a trained model on a SageMaker endpoint, generate, and tear it down; find forgotten endpoints.

Runs offline: a local moto server stands in for AWS, and since it runs no model, the endpoint's
answer is queued on it beforehand. With a real account and a finished training job:

    backend = SageMakerBackend(role="arn:aws:iam::123456789012:role/LensaForAllSageMakerRole")
    with backend.deploy("s3://my-bucket/lensa-for-all/me/output/<job>/output/model.tar.gz",
                        instance_type="ml.g5.xlarge") as endpoint:
        for i, image in enumerate(endpoint.generate("ohwx person as a knight, oil painting", num_images=4)):
            image.save(f"knight-{i}.png")
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request

from PIL import Image

from lensa_for_all import SageMakerBackend
from lensa_for_all.backends.endpoint import list_endpoints
from lensa_for_all.testing.sagemaker import local_aws


def _queue_answer(moto_url: str, n: int) -> None:
    """Offline only: tell moto what the endpoint answers (the JSON contract of code/inference.py)."""
    images = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(buf, format="PNG")
        images.append(base64.b64encode(buf.getvalue()).decode())
    body = json.dumps({"images": images, "seeds": [7 + i for i in range(n)], "parameters": {"seed": 7}})
    request = urllib.request.Request(
        f"{moto_url}/moto-api/static/sagemaker/endpoint-results", method="POST",
        data=json.dumps({"results": [{"Body": body, "ContentType": "application/json"}]}).encode(),
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


def main() -> None:
    with local_aws() as moto_url:
        _queue_answer(moto_url, 2)
        backend = SageMakerBackend(role="arn:aws:iam::123456789012:role/LensaForAllSageMakerRole",
                                   show_progress=False)
        # (moto knows no g5 endpoint instances; on AWS keep the default ml.g5.xlarge)
        with backend.deploy("s3://my-bucket/lensa/output/job/output/model.tar.gz",
                            instance_type="ml.g4dn.xlarge") as endpoint:
            print("endpoints running:", [e.name for e in list_endpoints(backend.aws)])
            response = endpoint.invoke("ohwx person as a knight, oil painting", num_images=2, seed=7,
                                       num_inference_steps=30)
            for image, seed in zip(response.images, response.seeds, strict=True):
                print(f"image {image.size} from seed {seed}")
        print("after the with block:", list_endpoints(backend.aws))  # deleted: nothing left billing


if __name__ == "__main__":
    main()
