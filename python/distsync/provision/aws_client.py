"""The boto3 clients setup runs with, and one short error per failed AWS call.

boto3 and botocore are imported inside the functions that use them, so that the pure layers
(``aws_policies``) and a local setup never load them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from distsync.errors import DistsyncError, StorageError, UsageError
from distsync.provision.aws_policies import validate_endpoint

__all__ = [
    "AwsClients",
    "call",
    "connect",
    "error_code",
    "is_not_found",
    "lookup",
    "translate",
]

T = TypeVar("T")

# "Not there" (HEAD requests carry only the status; bucket settings that were never set
# answer with codes of their own).
_NOT_FOUND = {
    "404",
    "NotFound",
    "NoSuchEntity",
    "ServerSideEncryptionConfigurationNotFoundError",
    "OwnershipControlsNotFoundError",
}


@dataclass
class AwsClients:
    s3: Any
    iam: Any
    sts: Any
    region: str
    endpoint: str | None = None
    credential_source: str = "unknown"
    credentials: Any = field(default=None, repr=False)  # botocore's, for --no-iam


def connect(region: str, endpoint: str | None = None, profile: str | None = None) -> AwsClients:
    """Clients for the identity that runs setup: boto3's standard chain, or ``profile``.

    Secret keys are never taken as flags (they would show in process listings).
    """
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError

    if endpoint:
        validate_endpoint(endpoint)
    # botocore announces at INFO where it found credentials; the CLI logs INFO to stderr.
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        credentials = session.get_credentials()
    except BotoCoreError as exc:  # e.g. ProfileNotFound, a malformed shared config file
        raise UsageError(f"AWS credentials for setup: {exc}") from None
    if credentials is None:
        raise UsageError(
            "no AWS credentials for setup: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or pass --profile (an administrator of the account)"
        )
    options: dict[str, Any] = {
        # Few attempts: setup is interactive, and a wrong --endpoint should fail fast.
        "retries": {"max_attempts": 3, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    if endpoint:
        # Compatible servers on a plain host:port cannot do virtual-hosted bucket names.
        options["s3"] = {"addressing_style": "path"}
    config = BotoConfig(**options)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint or None, config=config)

    return AwsClients(
        s3=client("s3"),
        iam=client("iam"),
        sts=client("sts"),
        region=region,
        endpoint=endpoint,
        credential_source=str(getattr(credentials, "method", "unknown")),
        credentials=credentials,
    )


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    return code in _NOT_FOUND or code.startswith("NoSuch")


# What an endpoint answers to the API of a service it does not offer (an S3-only store asked
# for STS or IAM): HTTP 501, or an error code that is not that service's.
_NOT_OFFERED_CODES = {
    "NotImplemented",
    "InvalidAction",
    "UnknownOperation",
    "UnknownOperationException",
    "MethodNotAllowed",
    "NoSuchBucket",
}
_IDENTITY_SERVICES = {"sts": "STS", "iam": "IAM"}


def _api_of(fn: Callable[..., Any]) -> str | None:
    """``service:Operation`` (e.g. ``sts:GetCallerIdentity``) of a bound boto3 client method."""
    meta = getattr(getattr(fn, "__self__", None), "meta", None)
    try:
        service = str(meta.service_model.service_name)  # type: ignore[union-attr]
        operation = meta.method_to_api_mapping[fn.__name__]  # type: ignore[union-attr]
    except (AttributeError, KeyError):
        return None
    return f"{service}:{operation}"


def _not_offered(exc: Exception, endpoint: str | None, api: str | None) -> DistsyncError | None:
    """The one line for an endpoint that does not offer STS or IAM, or None if that is not
    what ``exc`` shows."""
    from botocore.exceptions import ClientError
    from botocore.parsers import ResponseParserError

    service = (api or "").partition(":")[0]
    if not endpoint or service not in _IDENTITY_SERVICES:
        return None
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # No code at all: an error in another API's shape, which botocore could not read.
        if status != 501 and code and code not in _NOT_OFFERED_CODES:
            return None
        answer = f"HTTP {status}" + (f" {code}" if code else "")
    elif isinstance(exc, ResponseParserError):
        answer = f"something that is not an {_IDENTITY_SERVICES[service]} response"
    else:
        return None
    return UsageError(
        f"the endpoint {endpoint} answered {answer} to {api}: it offers no "
        f"{_IDENTITY_SERVICES[service]}, which setup needs to create the uploader's and the "
        "daemon's identities; on an S3-only store, make a bucket and keys with its own tools "
        'and write the two configs yourself ("Stores without IAM" in docs/setup-s3.md), or use '
        "--storage local"
    )


def translate(
    what: str, exc: Exception, endpoint: str | None, api: str | None = None
) -> DistsyncError:
    """One line for a failed AWS call (``api``, like ``sts:GetCallerIdentity``, when known);
    never the request's credentials."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    missing = _not_offered(exc, endpoint, api)
    if missing is not None:
        return missing
    if isinstance(exc, ClientError):
        code = error_code(exc) or "error"
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        detail = f"{code}: {message}" if message and message != code else code
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            detail += " (the identity running setup needs the policy in docs/setup-s3.md)"
        elif code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidAccessKeyId"):
            detail += " (check the AWS credentials setup runs with)"
        return StorageError(f"cannot {what}: {detail}")
    if isinstance(exc, NoCredentialsError):
        return UsageError("no AWS credentials for setup (set AWS_PROFILE, or pass --profile)")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        where = endpoint or "AWS"
        return StorageError(f"cannot {what}: cannot reach {where} ({type(exc).__name__})")
    return StorageError(f"cannot {what}: {type(exc).__name__}: {exc}")


def call(clients: AwsClients, what: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        raise translate(what, exc, clients.endpoint, _api_of(fn)) from None


def lookup(clients: AwsClients, what: str, fn: Callable[..., T], /, **kwargs: Any) -> T | None:
    """Like ``call``, but None when AWS says the thing (or the setting) does not exist."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise translate(what, exc, clients.endpoint, _api_of(fn)) from None
    except (BotoCoreError, ResponseParserError) as exc:
        raise translate(what, exc, clients.endpoint, _api_of(fn)) from None
