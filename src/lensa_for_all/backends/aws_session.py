"""The AWS account a run uses: credentials, region, account id, execution role and bucket.

Everything here turns botocore's failures (no credentials, no region, access denied, a bucket owned by
someone else) into :class:`~lensa_for_all.errors.AWSConfigurationError` messages that say what to do,
so a user never sees a traceback from three libraries down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AWSConfigurationError
from ..version import __version__

if TYPE_CHECKING:  # pragma: no cover
    import boto3

__all__ = [
    "AWSSession", "DEFAULT_ROLE_NAMES", "ROLE_PERMISSIONS_HELP", "import_boto3", "is_client_error",
    "error_code", "botocore_debug_muted",
]

logger = logging.getLogger(__name__)

# Tried in order when no role is given and we are not inside SageMaker Studio or a notebook instance.
DEFAULT_ROLE_NAMES = ("LensaForAllSageMakerRole", "SageMakerExecutionRole")

ROLE_PERMISSIONS_HELP = (
    "Create an IAM role that SageMaker can assume (trust policy for sagemaker.amazonaws.com) named "
    "'LensaForAllSageMakerRole', with the managed policy AmazonSageMakerFullAccess (or at least: "
    "s3:GetObject/PutObject/ListBucket/DeleteObject on your bucket, logs:CreateLogStream/PutLogEvents/"
    "GetLogEvents/DescribeLogStreams, ecr:GetAuthorizationToken/BatchGetImage/GetDownloadUrlForLayer, "
    "cloudwatch:PutMetricData), then pass role='arn:aws:iam::<account>:role/LensaForAllSageMakerRole' "
    "or set LENSA_SAGEMAKER_ROLE. See docs/sagemaker.md."
)

# Inside Studio and notebook instances this file names the resource, whose role we can look up.
_NOTEBOOK_METADATA = Path("/opt/ml/metadata/resource-metadata.json")


def import_boto3() -> Any:
    """Import boto3 or say how to install it (it lives in the ``aws`` extra)."""
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - boto3 is installed in the dev environment
        raise AWSConfigurationError(
            'The SageMaker backend needs boto3: pip install "lensa-for-all[aws]"'
        ) from exc
    return boto3


@contextlib.contextmanager
def botocore_debug_muted() -> Iterator[None]:
    """Keep botocore and urllib3 at INFO or above for the block.

    At DEBUG they log every request and response body, and a training job's or model's ``Environment``
    (which may hold a Hugging Face token) is in both; ``--verbose`` must not print the token.
    """
    loggers = [logging.getLogger(name) for name in ("botocore", "boto3", "urllib3", "s3transfer")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() < logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def is_client_error(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class AWSSession:
    """One boto3 session plus the account facts every AWS call needs.

    ``region`` and credentials come from boto3's default chain (env, profile, SSO, instance role) unless
    given; clients are created once and shared (they are thread-safe) so tests can stub them.
    """

    def __init__(self, region: str | None = None, *, profile: str | None = None,
                 boto_session: boto3.Session | None = None) -> None:
        boto3 = import_boto3()
        from botocore.exceptions import ProfileNotFound

        if boto_session is None:
            try:
                boto_session = boto3.Session(profile_name=profile, region_name=region)
            except ProfileNotFound as exc:
                raise AWSConfigurationError(
                    f"AWS profile {profile!r} is not in your AWS config; run `aws configure --profile {profile}` "
                    "or pass another profile name."
                ) from exc
        self.boto_session = boto_session
        self._region = region or boto_session.region_name
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._account_id: str | None = None

    # ---- basics --------------------------------------------------------------------------------------

    @property
    def region(self) -> str:
        if not self._region:
            raise AWSConfigurationError(
                "No AWS region is set. Pass region='us-east-1' (or your region), set AWS_DEFAULT_REGION, "
                "or run `aws configure`."
            )
        return self._region

    def client(self, service: str) -> Any:
        """A cached boto3 client for ``service`` in this session's region."""
        with self._lock:
            if service not in self._clients:
                from botocore.config import Config

                config = Config(retries={"max_attempts": 8, "mode": "adaptive"},
                                user_agent_extra=f"lensa-for-all/{__version__}")
                self._clients[service] = self.boto_session.client(service, region_name=self.region,
                                                                  config=config)
            return self._clients[service]

    @property
    def account_id(self) -> str:
        """The caller's account id (from STS); also the first call that proves credentials work."""
        if self._account_id is None:
            identity = self.call(self.client("sts").get_caller_identity, what="read your AWS identity")
            self._account_id = str(identity["Account"])
        return self._account_id

    def call(self, fn: Any, *, what: str, **kwargs: Any) -> Any:
        """Call ``fn(**kwargs)``, turning missing/invalid credentials into a clear error."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )

        try:
            return fn(**kwargs)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise AWSConfigurationError(
                f"Could not {what}: no AWS credentials were found. Run `aws configure` (or `aws sso login`), "
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass profile='name'."
            ) from exc
        except NoRegionError as exc:
            raise AWSConfigurationError(
                f"Could not {what}: no AWS region is set. Pass region=... or set AWS_DEFAULT_REGION."
            ) from exc
        except EndpointConnectionError as exc:
            raise AWSConfigurationError(f"Could not {what}: cannot reach AWS ({exc}). Check your network.") from exc
        except ClientError as exc:
            code = error_code(exc)
            if code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                        "ExpiredToken", "ExpiredTokenException"):
                raise AWSConfigurationError(
                    f"Could not {what}: AWS rejected your credentials ({code}). Refresh them "
                    "(`aws sso login` or new access keys) and try again."
                ) from exc
            raise

    # ---- execution role ------------------------------------------------------------------------------

    def resolve_role(self, role: str | None = None) -> str:
        """The ARN of the role SageMaker jobs run as.

        Order: ``role`` (an ARN, or a role name looked up in IAM), ``LENSA_SAGEMAKER_ROLE``, the role of the
        Studio space / notebook instance we run in, the role we are currently assuming if it is a
        SageMaker execution role, then the first of :data:`DEFAULT_ROLE_NAMES` that exists.
        """
        role = role or os.environ.get("LENSA_SAGEMAKER_ROLE") or None
        if role:
            if role.startswith("arn:"):
                return role
            found = self._role_arn_by_name(role)
            if found is None:
                raise AWSConfigurationError(f"IAM role {role!r} does not exist in account {self.account_id}. "
                                            + ROLE_PERMISSIONS_HELP)
            return found
        for candidate in (self._notebook_role(), self._assumed_sagemaker_role()):
            if candidate:
                return candidate
        for name in DEFAULT_ROLE_NAMES:
            found = self._role_arn_by_name(name)
            if found:
                return found
        raise AWSConfigurationError("No SageMaker execution role was given or found. " + ROLE_PERMISSIONS_HELP)

    def _role_arn_by_name(self, name: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.call(self.client("iam").get_role, what=f"look up IAM role {name}", RoleName=name)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchEntity", "NoSuchEntityException"):
                return None
            if error_code(exc) in ("AccessDenied", "AccessDeniedException"):
                raise AWSConfigurationError(
                    f"Not allowed to read IAM role {name!r} (iam:GetRole). Pass the role's full ARN instead."
                ) from exc
            raise
        return str(resp["Role"]["Arn"])

    def _notebook_role(self) -> str | None:
        if not _NOTEBOOK_METADATA.is_file():
            return None
        try:
            meta = json.loads(_NOTEBOOK_METADATA.read_text())
            sm = self.client("sagemaker")
            if meta.get("DomainId") and meta.get("UserProfileName"):
                prof = sm.describe_user_profile(DomainId=meta["DomainId"], UserProfileName=meta["UserProfileName"])
                arn = prof.get("UserSettings", {}).get("ExecutionRole")
                if not arn:
                    dom = sm.describe_domain(DomainId=meta["DomainId"])
                    arn = dom.get("DefaultUserSettings", {}).get("ExecutionRole")
                return str(arn) if arn else None
            if meta.get("ResourceName"):
                return str(sm.describe_notebook_instance(NotebookInstanceName=meta["ResourceName"])["RoleArn"])
        except Exception as exc:  # best effort: fall through to the other ways of finding a role
            logger.debug("could not read the notebook's role: %s", exc)
        return None

    def _assumed_sagemaker_role(self) -> str | None:
        arn = str(self.call(self.client("sts").get_caller_identity, what="read your AWS identity")["Arn"])
        # arn:aws:sts::123:assumed-role/AmazonSageMaker-ExecutionRole-2024/SageMaker
        if ":assumed-role/" not in arn:
            return None
        role_name = arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        if "sagemaker" not in role_name.lower():
            return None
        return self._role_arn_by_name(role_name)

    # ---- bucket --------------------------------------------------------------------------------------

    def default_bucket_name(self) -> str:
        """SageMaker's own convention, so users find our files where the SDK would put them."""
        return f"sagemaker-{self.region}-{self.account_id}"

    def ensure_bucket(self, bucket: str | None = None, *, kms_key_id: str | None = None) -> str:
        """Return ``bucket`` (or the default one, created encrypted and private when it does not exist).

        ``head_bucket`` names ``ExpectedBucketOwner``: a bucket of that name in another account answers 403,
        which we report instead of writing a user's photos into a stranger's bucket.
        """
        from botocore.exceptions import ClientError

        name = bucket or self.default_bucket_name()
        s3 = self.client("s3")
        try:
            self.call(s3.head_bucket, what=f"check bucket {name}", Bucket=name, ExpectedBucketOwner=self.account_id)
            return name
        except ClientError as exc:
            code = error_code(exc)
            if code in ("403", "AccessDenied", "Forbidden"):
                raise AWSConfigurationError(
                    f"Bucket {name!r} exists but is not owned by account {self.account_id} or you may not read "
                    "it. Pass bucket='a-bucket-you-own'."
                ) from exc
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise AWSConfigurationError(f"Cannot use bucket {name!r}: {exc}") from exc
        if bucket is not None and bucket != self.default_bucket_name():
            raise AWSConfigurationError(
                f"Bucket {name!r} does not exist in account {self.account_id}. Create it (private, encrypted), "
                f"or leave bucket unset to use {self.default_bucket_name()!r}, which is created for you."
            )
        logger.info("creating bucket %s (encrypted, public access blocked)", name)
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.call(s3.create_bucket, what=f"create bucket {name}", **kwargs)
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou",):
                raise AWSConfigurationError(f"Cannot create bucket {name!r}: {exc}") from exc
        rule: dict[str, Any] = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id} if kms_key_id else {
            "SSEAlgorithm": "AES256"}
        s3.put_bucket_encryption(
            Bucket=name, ExpectedBucketOwner=self.account_id,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": rule}]},
        )
        s3.put_public_access_block(
            Bucket=name, ExpectedBucketOwner=self.account_id,
            PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                            "BlockPublicPolicy": True, "RestrictPublicBuckets": True},
        )
        return name
