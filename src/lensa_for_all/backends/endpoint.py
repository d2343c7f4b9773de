"""``Endpoint``: a SageMaker endpoint serving a trained model, and finding the ones we left running.

An endpoint bills by the hour while it exists, so :class:`Endpoint` is a context manager that deletes the
endpoint, its config and its model on exit (also when the block raises), and every resource it creates is
tagged so ``lensa-for-all endpoints list`` can find forgotten ones.

The request/response JSON contract is the one of the handler, :mod:`lensa_for_all.generation.endpoint_handler`
(shipped in the model as ``code/inference.py``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import EndpointError, LensaError
from ..version import __version__
from .aws_session import AWSSession, botocore_debug_muted, error_code
from .images import inference_image_uri
from .training_job import LIBRARY_TAG, unique_job_name

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["Endpoint", "EndpointResponse", "EndpointInfo", "AsyncInvocation", "list_endpoints", "GENERATE_PARAMS",
           "FAMILY_TAG"]

# Tag on an endpoint deployed from a TrainingResult: the model family (``sd1``, ``sdxl``), so a client that knows
# only the endpoint's name renders at the model's native size (see AvatarModel.from_endpoint).
FAMILY_TAG = "lensa-for-all:family"

logger = logging.getLogger(__name__)

GENERATE_PARAMS = ("negative_prompt", "num_inference_steps", "guidance_scale", "height", "width", "seed",
                   "num_images", "scheduler")
JSON = "application/json"


@attrs.frozen
class EndpointResponse:
    """Decoded endpoint answer: ``images[i]`` was made with ``seeds[i]`` and ``parameters``."""

    images: tuple[Image.Image, ...]
    seeds: tuple[int, ...]
    parameters: Mapping[str, Any]

    @classmethod
    def from_json(cls, body: bytes | str) -> EndpointResponse:
        from PIL import Image as PILImage

        try:
            data = json.loads(body)
            images = []
            for item in data["images"]:
                image = PILImage.open(io.BytesIO(base64.b64decode(item, validate=True)))
                image.load()
                images.append(image)
            seeds = tuple(int(s) for s in data.get("seeds", []))
            params = dict(data.get("parameters", {}))
        except Exception as exc:
            preview = (body[:200] if isinstance(body, str) else body[:200].decode("utf-8", "replace"))
            raise EndpointError(f"The endpoint answered something that is not the expected JSON with base64 PNG "
                                f"images ({exc}): {preview!r}") from exc
        return cls(images=tuple(images), seeds=seeds, parameters=params)


@attrs.frozen
class EndpointInfo:
    """One endpoint this library created (from ``list_endpoints``)."""

    name: str
    status: str
    instance_type: str | None
    created: Any
    model_name: str | None
    config_name: str | None


def build_request(prompt: str, params: Mapping[str, Any]) -> bytes:
    unknown = sorted(set(params) - set(GENERATE_PARAMS))
    if unknown:
        raise LensaError(f"Unknown generation parameter(s) {unknown}; known: {list(GENERATE_PARAMS)}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise LensaError("The prompt must be a non-empty string")
    clean = {k: v for k, v in params.items() if v is not None}
    return json.dumps({"inputs": prompt, "parameters": clean}).encode("utf-8")


class AsyncInvocation:
    """A request queued on an asynchronous endpoint; :meth:`result` waits for its S3 output."""

    def __init__(self, session: AWSSession, output_location: str, failure_location: str | None,
                 inference_id: str | None = None) -> None:
        self.session = session
        self.output_location = output_location
        self.failure_location = failure_location
        self.inference_id = inference_id

    def _read(self, uri: str) -> bytes | None:
        from .s3 import S3Uri

        loc = S3Uri.parse(uri)
        s3 = self.session.client("s3")
        try:
            body = s3.get_object(Bucket=loc.bucket, Key=loc.key, ExpectedBucketOwner=self.session.account_id)["Body"]
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        try:
            return bytes(body.read())
        finally:
            body.close()

    def done(self) -> bool:
        return any(loc and self._read(loc) is not None for loc in (self.output_location, self.failure_location))

    def result(self, timeout_s: float = 900.0, poll_s: float = 5.0) -> EndpointResponse:
        deadline = time.monotonic() + timeout_s
        while True:
            out = self._read(self.output_location)
            if out is not None:
                return EndpointResponse.from_json(out)
            if self.failure_location:
                failure = self._read(self.failure_location)
                if failure is not None:
                    raise EndpointError(f"Asynchronous inference failed: {failure.decode('utf-8', 'replace')[:500]}")
            if time.monotonic() >= deadline:
                raise EndpointError(f"No result at {self.output_location} after {timeout_s:.0f} s; the request may "
                                    "still finish: call result() again later.")
            time.sleep(poll_s)


class Endpoint:
    """A deployed model. ``generate(prompt, **params)`` returns PIL images.

    ``with backend.deploy(result) as endpoint: images = endpoint.generate("ohwx person as a knight")``
    deletes the endpoint, config and model when the block ends. ``Endpoint(name)`` connects to an existing
    endpoint (deleting it on exit only when ``owned=True``).
    """

    def __init__(self, name: str, *, session: AWSSession | None = None, region: str | None = None,
                 asynchronous: bool = False, async_input_s3_uri: str | None = None,
                 model_name: str | None = None, config_name: str | None = None, owned: bool = False) -> None:
        self.name = name
        self.session = session or AWSSession(region)
        self.asynchronous = asynchronous
        self.async_input_s3_uri = async_input_s3_uri
        self.model_name = model_name
        self.config_name = config_name
        self.owned = owned
        self.deleted = False

    def __repr__(self) -> str:
        return f"Endpoint({self.name!r}, asynchronous={self.asynchronous}, owned={self.owned})"

    # ---- creation ------------------------------------------------------------------------------------

    @classmethod
    def deploy(cls, session: AWSSession, *, model_data_url: str, role_arn: str,
               instance_type: str = "ml.g5.xlarge", asynchronous: bool = False, name: str | None = None,
               wait: bool = True, image_uri: str | None = None, async_s3_uri: str | None = None,
               environment: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
               kms_key_id: str | None = None, initial_instance_count: int = 1) -> Endpoint:
        """Create model, endpoint config and endpoint (tagged); on any failure delete what was created."""
        with botocore_debug_muted():  # the model's environment may hold a Hugging Face token
            return cls._deploy(session, model_data_url=model_data_url, role_arn=role_arn,
                               instance_type=instance_type, asynchronous=asynchronous, name=name, wait=wait,
                               image_uri=image_uri, async_s3_uri=async_s3_uri, environment=environment, tags=tags,
                               kms_key_id=kms_key_id, initial_instance_count=initial_instance_count)

    @classmethod
    def _deploy(cls, session: AWSSession, *, model_data_url: str, role_arn: str, instance_type: str,
                asynchronous: bool, name: str | None, wait: bool, image_uri: str | None, async_s3_uri: str | None,
                environment: Mapping[str, str] | None, tags: Mapping[str, str] | None, kms_key_id: str | None,
                initial_instance_count: int) -> Endpoint:
        sm = session.client("sagemaker")
        name = name or unique_job_name("lensa-endpoint")
        all_tags = [{"Key": k, "Value": v} for k, v in sorted({LIBRARY_TAG: __version__, **(tags or {})}.items())]
        env = {"SAGEMAKER_PROGRAM": "inference.py", "HF_HUB_DISABLE_TELEMETRY": "1", **(environment or {})}
        endpoint = cls(name, session=session, asynchronous=asynchronous, owned=True,
                       async_input_s3_uri=f"{async_s3_uri.rstrip('/')}/input" if async_s3_uri else None)
        try:
            endpoint.model_name = name
            session.call(sm.create_model, what=f"create model {name}", ModelName=name, ExecutionRoleArn=role_arn,
                         PrimaryContainer={"Image": image_uri or inference_image_uri(session.region),
                                           "ModelDataUrl": model_data_url, "Environment": env},
                         Tags=all_tags)
            variant: dict[str, Any] = {"VariantName": "AllTraffic", "ModelName": name,
                                       "InstanceType": instance_type,
                                       "InitialInstanceCount": initial_instance_count}
            config: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": [variant], "Tags": all_tags}
            if kms_key_id:
                config["KmsKeyId"] = kms_key_id
            if asynchronous:
                if not async_s3_uri:
                    raise LensaError("Asynchronous endpoints need an S3 prefix for requests and results")
                output: dict[str, Any] = {"S3OutputPath": f"{async_s3_uri.rstrip('/')}/output",
                                          "S3FailurePath": f"{async_s3_uri.rstrip('/')}/failure"}
                if kms_key_id:
                    output["KmsKeyId"] = kms_key_id
                config["AsyncInferenceConfig"] = {"OutputConfig": output,
                                                  "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1}}
            endpoint.config_name = name
            sm.create_endpoint_config(**config)
            sm.create_endpoint(EndpointName=name, EndpointConfigName=name, Tags=all_tags)
            logger.info("creating endpoint %s on %s", name, instance_type)
            if wait:
                endpoint.wait_in_service()
        except BaseException as exc:
            endpoint.delete()
            if isinstance(exc, LensaError) or not isinstance(exc, Exception):
                raise
            raise EndpointError(f"Could not create endpoint {name}: {exc}. Nothing was left running.") from exc
        return endpoint

    def wait_in_service(self, *, delay_s: float = 30.0, max_attempts: int = 60) -> None:
        from botocore.exceptions import WaiterError

        sm = self.session.client("sagemaker")
        try:
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName=self.name, WaiterConfig={"Delay": delay_s, "MaxAttempts": max_attempts})
        except WaiterError as exc:
            reason = ""
            with contextlib.suppress(Exception):  # the endpoint may be gone already
                reason = sm.describe_endpoint(EndpointName=self.name).get("FailureReason", "")
            raise EndpointError(f"Endpoint {self.name} did not come into service: {reason or exc}") from exc

    # ---- use -----------------------------------------------------------------------------------------

    def invoke(self, prompt: str, **params: Any) -> EndpointResponse:
        """Generate on a real-time endpoint and return images with their seeds and parameters."""
        body = build_request(prompt, params)
        if self.asynchronous:
            return self.invoke_async(prompt, **params).result()
        runtime = self.session.client("sagemaker-runtime")
        try:
            resp = self.session.call(runtime.invoke_endpoint, what=f"invoke endpoint {self.name}",
                                     EndpointName=self.name, Body=body, ContentType=JSON, Accept=JSON)
        except LensaError:
            raise
        except Exception as exc:
            raise EndpointError(f"Invoking endpoint {self.name} failed: {exc}") from exc
        stream = resp["Body"]
        try:
            return EndpointResponse.from_json(stream.read())
        finally:
            stream.close()

    def generate(self, prompt: str, **params: Any) -> list[Image.Image]:
        """Images for ``prompt``. ``params`` are those of the contract: negative_prompt,
        num_inference_steps, guidance_scale, height, width, seed, num_images, scheduler.
        Use :meth:`invoke` to also get the seed of each image.
        """
        return list(self.invoke(prompt, **params).images)

    def invoke_async(self, prompt: str, **params: Any) -> AsyncInvocation:
        """Queue a request on an asynchronous endpoint (the request JSON goes through S3)."""
        if not self.async_input_s3_uri:
            raise EndpointError(f"Endpoint {self.name} has no S3 input location; deploy it with asynchronous=True")
        from .s3 import S3Uri

        loc = S3Uri.parse(self.async_input_s3_uri).join(f"{uuid.uuid4().hex}.json")
        s3 = self.session.client("s3")
        s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=build_request(prompt, params), ContentType=JSON,
                      ServerSideEncryption="AES256", ExpectedBucketOwner=self.session.account_id)
        runtime = self.session.client("sagemaker-runtime")
        try:
            resp = runtime.invoke_endpoint_async(EndpointName=self.name, InputLocation=str(loc), ContentType=JSON,
                                                 Accept=JSON, InferenceId=secrets.token_hex(8))
        except Exception as exc:
            raise EndpointError(f"Queuing a request on endpoint {self.name} failed: {exc}") from exc
        return AsyncInvocation(self.session, resp["OutputLocation"], resp.get("FailureLocation"),
                               resp.get("InferenceId"))

    # ---- teardown ------------------------------------------------------------------------------------

    def delete(self) -> None:
        """Delete the endpoint, then its config and model, then the model's Hugging Face token object in S3
        (``endpoint_secrets``); resources already gone are skipped."""
        sm = self.session.client("sagemaker")
        errors: list[str] = []
        token_uri = self._token_uri(sm)
        for what, fn, key, value in (
            ("endpoint", sm.delete_endpoint, "EndpointName", self.name),
            ("endpoint config", sm.delete_endpoint_config, "EndpointConfigName", self.config_name),
            ("model", sm.delete_model, "ModelName", self.model_name),
        ):
            if not value:
                continue
            try:
                fn(**{key: value})
                logger.info("deleted %s %s", what, value)
            except Exception as exc:
                if error_code(exc) == "ValidationException" and "not" in str(exc).lower():
                    continue  # "Could not find ..." : already gone
                errors.append(f"{what} {value}: {exc}")
        if token_uri:
            bucket, _, key = token_uri[len("s3://"):].partition("/")
            try:  # S3 answers a delete of a missing key with success: nothing to skip
                self.session.client("s3").delete_object(Bucket=bucket, Key=key)
                logger.info("deleted the endpoint's token object %s", token_uri)
            except Exception as exc:
                errors.append(f"token object {token_uri}: {exc}")
        self.deleted = True
        if errors:
            raise EndpointError("Some endpoint resources could not be deleted (delete them in the SageMaker "
                                "console to stop billing): " + "; ".join(errors))

    def _token_uri(self, sm: Any) -> str | None:
        """Where the model's Hugging Face token object is, read before the model (which names it) is deleted."""
        from .endpoint_secrets import HF_TOKEN_URI_ENV

        if not self.model_name:
            return None
        try:
            described = sm.describe_model(ModelName=self.model_name)
        except Exception:  # the model is gone already (or cannot be read): no object to find
            return None
        uri = (described.get("PrimaryContainer") or {}).get("Environment", {}).get(HF_TOKEN_URI_ENV)
        return uri if isinstance(uri, str) and uri.startswith("s3://") else None

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.owned and not self.deleted:
            try:
                self.delete()
            except EndpointError:
                if exc is None:
                    raise
                logger.exception("endpoint teardown failed while handling another error")

    # ---- discovery -----------------------------------------------------------------------------------

    def tags(self) -> dict[str, str]:
        """The endpoint's tags (``DescribeEndpoint`` for its ARN, then ``ListTags``)."""
        sm = self.session.client("sagemaker")
        desc = self.session.call(sm.describe_endpoint, what=f"find endpoint {self.name}", EndpointName=self.name)
        return _tags(self.session.call(sm.list_tags, what=f"read the tags of endpoint {self.name}",
                                       ResourceArn=desc["EndpointArn"]))

    @classmethod
    def from_name(cls, name: str, *, session: AWSSession | None = None, region: str | None = None,
                  owned: bool = False) -> Endpoint:
        """Connect to an existing endpoint, reading its config to know whether it is asynchronous."""
        session = session or AWSSession(region)
        sm = session.client("sagemaker")
        try:
            desc = session.call(sm.describe_endpoint, what=f"find endpoint {name}", EndpointName=name)
        except LensaError:
            raise
        except Exception as exc:
            raise EndpointError(f"No endpoint named {name!r} in {session.region}: {exc}") from exc
        config_name = desc.get("EndpointConfigName")
        cfg = sm.describe_endpoint_config(EndpointConfigName=config_name) if config_name else {}
        variants = cfg.get("ProductionVariants") or [{}]
        async_cfg = cfg.get("AsyncInferenceConfig")
        async_in = None
        if async_cfg:
            out = str(async_cfg.get("OutputConfig", {}).get("S3OutputPath", ""))
            async_in = out.rsplit("/", 1)[0] + "/input" if out else None
        return cls(name, session=session, asynchronous=bool(async_cfg), async_input_s3_uri=async_in,
                   model_name=variants[0].get("ModelName"), config_name=config_name, owned=owned)


def _tags(listed: Mapping[str, Any]) -> dict[str, str]:
    """A ``ListTags`` answer as a dict."""
    return {t["Key"]: t["Value"] for t in listed.get("Tags", [])}


def list_endpoints(session: AWSSession) -> list[EndpointInfo]:
    """Endpoints carrying this library's tag, newest first."""
    sm = session.client("sagemaker")
    found: list[EndpointInfo] = []
    kwargs: dict[str, Any] = {"MaxResults": 100}
    while True:
        page = session.call(sm.list_endpoints, what="list SageMaker endpoints", **kwargs)
        for item in page.get("Endpoints", []):
            tags = _tags(sm.list_tags(ResourceArn=item["EndpointArn"]))
            if LIBRARY_TAG not in tags:
                continue
            desc = sm.describe_endpoint(EndpointName=item["EndpointName"])
            config_name = desc.get("EndpointConfigName")
            instance_type = model_name = None
            try:
                variants = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
                instance_type, model_name = variants[0].get("InstanceType"), variants[0].get("ModelName")
            except Exception:  # config deleted by hand: still list the endpoint, it still bills
                pass
            found.append(EndpointInfo(name=item["EndpointName"], status=item.get("EndpointStatus", "?"),
                                      instance_type=instance_type, created=item.get("CreationTime"),
                                      model_name=model_name, config_name=config_name))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    found.sort(key=lambda e: str(e.created), reverse=True)
    return found
