"""Endpoints: the handler run locally on a tiny model, and deploy/generate/teardown on a moto server."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lensa_for_all.backends.endpoint import Endpoint, EndpointResponse, list_endpoints
from lensa_for_all.backends.sagemaker import SageMakerBackend
from lensa_for_all.errors import EndpointError, LensaError
from lensa_for_all.generation import endpoint_handler

ROLE = "arn:aws:iam::123456789012:role/LensaForAllSageMakerRole"
ARTIFACT = "s3://bkt-models/out/job/output/model.tar.gz"


def _png_b64(color: tuple[int, int, int], size: int = 8) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _queue(moto: str, path: str, results: list[dict[str, object]]) -> None:
    req = urllib.request.Request(f"{moto}/moto-api/static/sagemaker/{path}", method="POST",
                                 data=json.dumps({"results": results}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def _response(n: int = 2, seed: int = 42) -> str:
    return json.dumps({"images": [_png_b64((10 * i, 0, 0)) for i in range(n)], "seeds": [seed + i for i in range(n)],
                       "parameters": {"num_inference_steps": 20, "seed": seed}})


@pytest.fixture
def backend(aws_env: str) -> SageMakerBackend:
    return SageMakerBackend(role=ROLE, region="us-east-1", show_progress=False)


def _nothing_left(backend: SageMakerBackend) -> bool:
    sm = backend.aws.client("sagemaker")
    return (sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
            and sm.list_endpoint_configs()["EndpointConfigs"] == [])


# ---- the handler, locally on the tiny model ----------------------------------------------------------


@pytest.mark.slow
def test_handler_generates_reproducible_pngs_on_tiny_model(tiny_sd: Path) -> None:
    from PIL import Image

    model = endpoint_handler.model_fn(str(tiny_sd))
    body = json.dumps({"inputs": "a photo of ohwx person", "parameters": {
        "num_inference_steps": 2, "num_images": 2, "seed": 7, "guidance_scale": 5.0, "scheduler": "euler_a",
        "negative_prompt": "blurry"}})
    data = endpoint_handler.input_fn(body, "application/json")
    out = json.loads(endpoint_handler.output_fn(endpoint_handler.predict_fn(data, model), "application/json"))
    assert out["seeds"] == [7, 8]
    assert out["parameters"]["height"] == out["parameters"]["width"] == 64
    images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in out["images"]]
    assert [im.size for im in images] == [(64, 64), (64, 64)] and images[0].format == "PNG"
    # image 1 alone, from its own seed, is the same image
    again = endpoint_handler.predict_fn(endpoint_handler.input_fn(json.dumps({
        "inputs": "a photo of ohwx person", "parameters": {
            "num_inference_steps": 2, "seed": 8, "guidance_scale": 5.0, "scheduler": "euler_a",
            "negative_prompt": "blurry"}})), model)
    assert again["images"][0] == out["images"][1]
    # rendered by AvatarModel: its negative prompt was used as asked, and each PNG carries its parameters
    assert [m["seed"] for m in out["metadata"]] == [7, 8] and out["metadata"][0]["scheduler"] == "euler_a"
    assert "Seed: 7" in images[0].text["parameters"] and "blurry" in images[0].text["parameters"]
    # the client side decodes the same JSON
    decoded = EndpointResponse.from_json(json.dumps(out))
    assert decoded.seeds == (7, 8) and decoded.images[0].size == (64, 64)


@pytest.mark.gpu
def test_handler_runs_in_fp16_on_cuda(tiny_sd: Path) -> None:
    import torch

    model = endpoint_handler.model_fn(str(tiny_sd))
    assert model.pipeline.device.type == "cuda" and model.pipeline.unet.dtype == torch.float16
    body = json.dumps({"inputs": "a photo of ohwx person", "parameters": {"num_inference_steps": 2, "seed": 3}})
    out = endpoint_handler.predict_fn(endpoint_handler.input_fn(body), model)
    first = EndpointResponse.from_json(json.dumps(out)).images[0]
    assert first.size == (64, 64)
    assert len(set(first.getdata())) > 1  # fp16 NaNs would decode to one flat black image


@pytest.mark.parametrize(("body", "match"), [
    ("not json", "not JSON"),
    (json.dumps({"prompt": "x"}), "inputs"),
    (json.dumps({"inputs": "x", "parameters": {"steps": 3}}), "Unknown parameter"),
    (json.dumps({"inputs": "x", "parameters": {"num_images": 50}}), r"num_images must be an integer in \[1, 8\]"),
    (json.dumps({"inputs": "x", "parameters": {"height": 100}}), "multiple of 8"),
    (json.dumps({"inputs": "x", "parameters": {"scheduler": "magic"}}), "scheduler must be one of"),
])
def test_handler_refuses_bad_requests(body: str, match: str) -> None:
    with pytest.raises(endpoint_handler.BadRequest, match=match):
        endpoint_handler.input_fn(body, "application/json")


def test_handler_takes_the_library_scheduler_names() -> None:
    from lensa_for_all.generation.schedulers import SCHEDULERS

    for name in SCHEDULERS:
        assert endpoint_handler.input_fn(json.dumps({"inputs": "x", "parameters": {"scheduler": name}}))


def test_handler_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="neither a diffusers pipeline nor a LoRA"):
        endpoint_handler.model_fn(str(tmp_path))


# ---- deploy, generate, teardown on moto -----------------------------------------------------------------


def test_deploy_generate_and_teardown_on_exit(backend: SageMakerBackend, aws_env: str) -> None:
    _queue(aws_env, "endpoint-results", [{"Body": _response(), "ContentType": "application/json",
                                          "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}])
    requests: list[bytes] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        requests.append(params["body"])

    backend.aws.client("sagemaker-runtime").meta.events.register(
        "before-call.sagemaker-runtime.InvokeEndpoint", record)
    with backend.deploy(ARTIFACT, instance_type="ml.g4dn.xlarge") as endpoint:
        sm = backend.aws.client("sagemaker")
        assert sm.describe_endpoint(EndpointName=endpoint.name)["EndpointStatus"] == "InService"
        model = sm.describe_model(ModelName=endpoint.model_name)
        assert model["PrimaryContainer"]["ModelDataUrl"] == ARTIFACT
        assert "huggingface-pytorch-inference" in model["PrimaryContainer"]["Image"]
        assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
        images = endpoint.generate("ohwx person as a knight", num_inference_steps=20, seed=42, num_images=2)
        assert [im.size for im in images] == [(8, 8), (8, 8)]
        assert images[1].getpixel((0, 0)) == (10, 0, 0)
        assert [e.name for e in list_endpoints(backend.aws)] == [endpoint.name]
    assert json.loads(requests[0]) == {"inputs": "ohwx person as a knight",
                                       "parameters": {"num_inference_steps": 20, "seed": 42, "num_images": 2}}
    assert endpoint.deleted and _nothing_left(backend)


def test_teardown_also_on_error_and_invoke_gives_seeds(backend: SageMakerBackend, aws_env: str) -> None:
    _queue(aws_env, "endpoint-results", [{"Body": _response(n=1, seed=5), "ContentType": "application/json",
                                          "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}])
    with pytest.raises(ZeroDivisionError), backend.deploy(ARTIFACT, instance_type="ml.g4dn.xlarge") as endpoint:
        response = endpoint.invoke("ohwx dog, watercolor", seed=5)
        assert response.seeds == (5,) and response.parameters["seed"] == 5
        1 / 0  # noqa: B018
    assert _nothing_left(backend)


def test_failed_deploy_leaves_nothing_behind(backend: SageMakerBackend) -> None:
    # moto's endpoint-config validation predates g5: a natural failure after the model was created
    with pytest.raises(EndpointError, match="Could not create endpoint.*Nothing was left running"):
        backend.deploy(ARTIFACT, instance_type="ml.g5.xlarge")
    assert _nothing_left(backend)


def test_generate_validates_parameters_before_calling_aws(backend: SageMakerBackend) -> None:
    endpoint = Endpoint("not-deployed", session=backend.aws)
    with pytest.raises(LensaError, match="Unknown generation parameter"):
        endpoint.generate("ohwx person", steps=3)
    with pytest.raises(LensaError, match="non-empty"):
        endpoint.generate("  ")


def test_garbage_response_is_a_clear_error(backend: SageMakerBackend, aws_env: str) -> None:
    _queue(aws_env, "endpoint-results", [{"Body": "<html>oops</html>", "ContentType": "text/html",
                                          "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}])
    with backend.deploy(ARTIFACT, instance_type="ml.g4dn.xlarge") as endpoint, \
            pytest.raises(EndpointError, match="not the expected JSON"):
        endpoint.generate("ohwx person")


def test_async_endpoint_round_trip_through_s3(backend: SageMakerBackend, aws_env: str) -> None:
    _queue(aws_env, "async-endpoint-results", [{"data": _response(n=3, seed=1)},
                                               {"is_failure": True, "data": "CUDA out of memory"}])
    with backend.deploy(ARTIFACT, instance_type="ml.g4dn.xlarge", asynchronous=True) as endpoint:
        cfg = backend.aws.client("sagemaker").describe_endpoint_config(EndpointConfigName=endpoint.config_name)
        out = cfg["AsyncInferenceConfig"]["OutputConfig"]
        assert out["S3OutputPath"].endswith("/lensa-for-all/async/output")
        pending = endpoint.invoke_async("ohwx cat, oil painting", num_images=3, seed=1)
        assert pending.done()
        assert pending.result(timeout_s=5, poll_s=0.01).seeds == (1, 2, 3)
        # the request JSON went to S3 under the async input prefix
        bucket = "sagemaker-us-east-1-123456789012"
        keys = [o["Key"] for o in backend.aws.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
        assert any(k.startswith("lensa-for-all/async/input/") for k in keys)
        with pytest.raises(EndpointError, match="CUDA out of memory"):
            endpoint.invoke_async("ohwx cat, again").result(timeout_s=5, poll_s=0.01)
        again = Endpoint.from_name(endpoint.name, session=backend.aws)
        assert again.asynchronous and again.async_input_s3_uri == endpoint.async_input_s3_uri
    assert _nothing_left(backend)


# ---- finding forgotten endpoints: the CLI -------------------------------------------------------------


def test_cli_lists_and_deletes_only_our_endpoints(backend: SageMakerBackend,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from lensa_for_all.cli.main import main

    ours = [backend.deploy(ARTIFACT, instance_type="ml.g4dn.xlarge") for _ in range(2)]
    sm = backend.aws.client("sagemaker")
    sm.create_model(ModelName="theirs", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img"})
    sm.create_endpoint_config(EndpointConfigName="theirs", ProductionVariants=[{
        "VariantName": "v", "ModelName": "theirs", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="theirs", EndpointConfigName="theirs")

    assert main(["endpoints", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(e.name in listed for e in ours) and "theirs" not in listed and "ml.g4dn.xlarge" in listed

    assert main(["endpoints", "delete", "theirs", "--yes"]) == 1
    assert "Not endpoints created by lensa-for-all" in capsys.readouterr().err
    assert main(["endpoints", "delete", ours[0].name, "--yes"]) == 0
    assert [e.name for e in list_endpoints(backend.aws)] == [ours[1].name]
    assert main(["endpoints", "delete", "--all", "--yes"]) == 0
    assert list_endpoints(backend.aws) == []
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["theirs"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["theirs"]
    assert main(["endpoints", "list"]) == 0
    assert "No lensa-for-all endpoints in us-east-1" in capsys.readouterr().out


@pytest.mark.slow
def test_handler_defaults_are_local_generation_defaults(tiny_sd: Path) -> None:
    """Left-out parameters take AvatarModel's defaults: the endpoint renders what `generate` renders."""
    from lensa_for_all.generation import AvatarModel

    model = endpoint_handler.model_fn(str(tiny_sd))
    body = json.dumps({"inputs": "a photo of ohwx person", "parameters": {"num_inference_steps": 2, "seed": 5}})
    out = endpoint_handler.predict_fn(endpoint_handler.input_fn(body), model)
    local = AvatarModel.load(str(tiny_sd)).generate("a photo of ohwx person", 1, seed=5, num_inference_steps=2)
    assert out["metadata"][0]["scheduler"] == local[0].scheduler == "dpmpp_2m_karras"
    assert out["metadata"][0]["negative_prompt"] == local[0].negative_prompt != ""
    assert out["metadata"][0]["guidance_scale"] == local[0].guidance_scale
    served = EndpointResponse.from_json(json.dumps(out)).images[0].convert("RGB")
    assert served.tobytes() == local[0].image.convert("RGB").tobytes()


def test_an_endpoint_renders_at_its_model_family_native_size(backend: SageMakerBackend, tmp_path: Path) -> None:
    from lensa_for_all.backends.endpoint import FAMILY_TAG
    from lensa_for_all.generation import AvatarModel
    from lensa_for_all.training.backend import TrainingResult

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "lensa_manifest.json").write_text(json.dumps({"method": "lora", "model_family": "sdxl"}))
    result = TrainingResult(output_dir=model_dir, artifact_uri=ARTIFACT, backend="sagemaker")
    with backend.deploy(result, instance_type="ml.g4dn.xlarge") as sdxl, \
            backend.deploy(ARTIFACT, instance_type="ml.g4dn.xlarge") as untagged:
        assert sdxl.tags()[FAMILY_TAG] == "sdxl" and FAMILY_TAG not in untagged.tags()
        # a client that knows only the name: SDXL at 1024 px, an endpoint without the tag at SD 1.x's 512
        assert AvatarModel.from_endpoint(sdxl.name, region="us-east-1").default_size == (1024, 1024)
        assert AvatarModel.from_endpoint(untagged.name, region="us-east-1").default_size == (512, 512)
        assert AvatarModel.from_endpoint(sdxl.name, region="us-east-1", default_size=(768, 768)).default_size == (
            768, 768)
