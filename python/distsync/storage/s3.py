"""``Storage = "S3"``: a bucket on AWS S3 or an S3-compatible store (MinIO, Ceph, R2), via boto3.

Transport failures are retried at two levels. botocore's standard retry mode covers every
request that fails before its response body starts (500, 503 SlowDown, resets, timeouts),
with bounded attempts and exponential backoff. A body that breaks *while being read* (reset
mid-body, a stall past the read timeout, a short body) is outside botocore's reach, so reads
carry a bounded retry loop of their own. Every other failure becomes one StorageError line that
names the store, the action and the key, and never a credential.

Large objects are written as a streaming multipart upload: the caller's writes fill part
buffers, full parts upload on a small thread pool, and a fixed budget of buffers bounds memory
whatever the object size. Nothing is written to disk.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from distsync.config import Config
from distsync.errors import AccessDeniedError, FormatError, NotFoundError, StorageError
from distsync.plugin_config import no_settings
from distsync.storage.api import STORAGE_API, Capabilities
from distsync.storage.base import SMALL_OBJECT_LIMIT, StoredObject, too_large
from distsync.storage.parts import PartWriter

if TYPE_CHECKING:
    from distsync.provision.options import Say, SetupOptions, SetupResult

__all__ = ["BACKEND", "DEFAULT_PART_SIZE", "MAX_PARTS", "S3Store", "part_size_for"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1 << 20
DEFAULT_PART_SIZE = 8 * MiB
MAX_PARTS = 10_000  # S3's limit per multipart upload
_PARTS_PER_TIER = 2000
_MAX_GROWTH = 4  # parts grow to at most 16x the base size (128 MiB for 8 MiB parts)

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
# Anything that could carry a signature or a key if an exception text echoes a URL.
_SECRET_PATTERN = re.compile(
    r"(X-Amz-(?:Signature|Credential|Security-Token)=|Signature=|AWSAccessKeyId=)[^&\s\"']*",
    re.IGNORECASE,
)


def part_size_for(part_number: int, base: int = DEFAULT_PART_SIZE) -> int:
    """Size of multipart part ``part_number`` (1-based): doubling every 2000 parts.

    The total size is unknown while streaming, so parts grow instead: with 8 MiB parts the
    first 15.6 GiB go in 8 MiB parts, 64 MiB parts start past 109 GiB, and 10,000 parts hold
    484 GiB.
    """
    return base << min((part_number - 1) // _PARTS_PER_TIER, _MAX_GROWTH)


def _redact(text: str) -> str:
    return _SECRET_PATTERN.sub(r"\1<redacted>", " ".join(text.split()))[:300]


class S3Store:
    """A bucket (optionally at a custom endpoint) playing the ``Store`` interface."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        endpoint: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        upload_workers: int = 4,
        read_attempts: int = 5,
        retry_base_delay: float = 0.2,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.endpoint = endpoint
        self.part_size = part_size
        self.upload_workers = max(1, upload_workers)
        self.read_attempts = max(1, read_attempts)
        self.retry_base_delay = retry_base_delay
        where = f" at {_public_url(endpoint)}" if endpoint else ""
        self.description = f"S3 bucket {bucket}{where}"
        self._bucket_checked = False
        config = getattr(getattr(client, "meta", None), "config", None)
        # Mirror s3transfer: with botocore's default integrity protection, multipart uploads
        # carry CRC32 per part, and CompleteMultipartUpload must repeat them.
        self._part_checksums = (
            getattr(config, "request_checksum_calculation", None) == "when_supported"
        )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        **kwargs: Any,
    ) -> S3Store:
        aws = cfg.aws
        if bool(aws.access_key) != bool(aws.secret_key):
            raise cfg.error(
                "AwsCreds", "AccessKey and SecretKey go together: give both, or neither"
            )
        if aws.session_token and not aws.access_key:
            raise cfg.error("AwsCreds.SessionToken", "needs AccessKey and SecretKey too")
        if aws.endpoint and urlsplit(aws.endpoint).scheme not in ("http", "https"):
            raise cfg.error("AwsCreds.Endpoint", "must be an http:// or https:// URL")
        # botocore's own session, not boto3's: the same client, and about 30 ms less CPU at
        # the start of every command and daemon (boto3 and s3transfer are not imported).
        import botocore.session

        session = botocore.session.get_session()
        if aws.access_key:
            session.set_credentials(aws.access_key, aws.secret_key, aws.session_token)
        # No keys in the file: botocore's own chain (environment, profile, instance role).
        workers = max(4, kwargs.get("upload_workers", 4))
        client = session.create_client(
            "s3",
            region_name=aws.region,
            endpoint_url=aws.endpoint,
            config=client_config(
                endpoint=aws.endpoint,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_attempts=max_attempts,
                pool=4 * workers,
            ),
        )
        return cls(client, cfg.storage_bucket, endpoint=aws.endpoint, **kwargs)

    # -- errors ---------------------------------------------------------------------------

    def error(self, action: str, key: str, exc: BaseException) -> StorageError:
        """One line for any botocore/boto3 failure; never a secret."""
        from botocore import exceptions as bx

        desc = self.description
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _NOT_FOUND:
                return NotFoundError(f"{desc}: no object {key}")
            if code == "NoSuchBucket":
                return StorageError(f"{desc}: the bucket does not exist (create it first)")
            if code in _DENIED or status == 403:
                return AccessDeniedError(
                    f"{desc}: access denied: cannot {action} {key} "
                    "(the identity's policy does not allow it)"
                )
            if code in _BAD_CREDENTIALS:
                return StorageError(f"{desc}: the store refused the credentials ({code})")
            message = _redact(str(err.get("Message", ""))) or "no details"
            return StorageError(
                f"{desc}: cannot {action} {key}: {code or 'error'} (HTTP {status}): {message}"
            )
        if isinstance(exc, bx.NoCredentialsError):
            return StorageError(
                f"{desc}: no AWS credentials found (set [AwsCreds] AccessKey and SecretKey, "
                "or provide them through the environment or an instance profile)"
            )
        if isinstance(exc, (bx.PartialCredentialsError, bx.CredentialRetrievalError)):
            return StorageError(f"{desc}: the AWS credentials are incomplete or unavailable")
        if isinstance(exc, bx.EndpointConnectionError):
            return StorageError(
                f"{desc}: cannot {action} {key}: the endpoint is unreachable "
                "(connection failed after retries)"
            )
        if isinstance(exc, bx.ConnectTimeoutError):
            return StorageError(f"{desc}: cannot {action} {key}: connecting timed out")
        if isinstance(exc, bx.ReadTimeoutError):
            return StorageError(f"{desc}: cannot {action} {key}: the store stopped answering")
        if isinstance(
            exc,
            (bx.ConnectionClosedError, bx.ResponseStreamingError, bx.IncompleteReadError),
        ):
            return StorageError(
                f"{desc}: cannot {action} {key}: the connection kept breaking mid-transfer"
            )
        if isinstance(exc, bx.BotoCoreError):
            return StorageError(
                f"{desc}: cannot {action} {key}: {type(exc).__name__}: {_redact(str(exc))}"
            )
        return StorageError(f"{desc}: cannot {action} {key}: {_redact(str(exc)) or repr(exc)}")

    def call(self, action: str, key: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """Call a client method (botocore retries inside); failures become StorageError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self.error(action, key, exc) from None

    @staticmethod
    def _code(exc: BaseException) -> tuple[str, int | None]:
        response = getattr(exc, "response", None) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(response.get("Error", {}).get("Code", "")), status

    # -- small objects --------------------------------------------------------------------

    def create(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            code, status = self._code(exc)
            if code not in _CONFLICT and status not in (409, 412):
                raise self.error("create", key, exc) from None
        except BotoCoreError as exc:
            raise self.error("create", key, exc) from None
        # A retried PUT whose first attempt did land also answers 412. The body holds fresh
        # random IVs, so finding exactly our bytes there means the key is ours after all.
        with contextlib.suppress(StorageError, FormatError):
            return self.get(key, limit=len(data)) == data
        return False

    def put(self, key: str, data: bytes) -> None:
        self.call("write", key, self._client.put_object, Key=key, Body=data)

    def delete(self, key: str) -> None:
        """DeleteObject (S3 answers the same for a key that is not there)."""
        self.call("delete", key, self._client.delete_object, Key=key)

    def get(self, key: str, *, limit: int = SMALL_OBJECT_LIMIT) -> bytes:
        # A ranged GET: the store sends at most limit + 1 bytes whatever the object's size,
        # and its Content-Range tells that size, so one request reads or refuses it.
        return self._read(key, f"bytes=0-{limit}", limit=limit)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return self._read(key, f"bytes={start}-{start + length - 1}")

    def size(self, key: str) -> int:
        head = self.call("read", key, self._client.head_object, Key=key)
        return int(head["ContentLength"])

    def presign(self, key: str, expires: int) -> str:
        """A presigned GET URL (signed locally, no request): BitTorrent's web seed."""
        from botocore.exceptions import BotoCoreError, ClientError

        params = {"Bucket": self.bucket, "Key": key}
        try:
            url = self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires
            )
        except (BotoCoreError, ClientError) as exc:
            raise self.error("presign a URL for", key, exc) from None
        return str(url)

    def changed(self, key: str, since: str | None) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"IfNoneMatch": since} if since else {}
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as exc:
            code, status = self._code(exc)
            if status == 304 or code == "304":
                return None
            if status == 404 or code in _NOT_FOUND:
                self._check_bucket()
                return None if since == "" else ""
            raise self.error("check", key, exc) from None
        except BotoCoreError as exc:
            raise self.error("check", key, exc) from None
        tag = str(head["ETag"])
        return None if tag == since else tag

    def _check_bucket(self) -> None:
        """HEAD cannot tell a missing key from a missing bucket: ask once per process."""
        if self._bucket_checked:
            return
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code, status = self._code(exc)
            if status == 404 or code in ("NoSuchBucket", "404"):
                raise StorageError(
                    f"{self.description}: the bucket does not exist (create it first)"
                ) from None
            # Any other answer (e.g. 403 for an identity without ListBucket) proves nothing.
        self._bucket_checked = True

    def inventory(self, prefix: str) -> Iterator[StoredObject]:
        from botocore.exceptions import BotoCoreError, ClientError

        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    modified = item["LastModified"].timestamp()
                    yield StoredObject(str(item["Key"]), int(item["Size"]), modified)
        except (BotoCoreError, ClientError) as exc:
            raise self.error("list", prefix, exc) from None

    def list_after(self, prefix: str, start_after: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, StartAfter=start_after
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield str(item["Key"])
        except (BotoCoreError, ClientError) as exc:
            raise self.error("list", prefix, exc) from None

    def _read(self, key: str, byte_range: str | None, *, limit: int | None = None) -> bytes:
        """GET (a range of) an object, retrying a body that breaks while being read.

        Ranges are a batch of chunks (a few MiB), so a retry simply reads the range again.
        With ``limit``, an object larger than that is refused by the size the answer's headers
        give, before its body is read (and never more than ``limit + 1`` bytes of it).
        """
        from botocore import exceptions as bx
        from urllib3.exceptions import HTTPError as Urllib3Error

        broken = (
            bx.ResponseStreamingError,
            bx.IncompleteReadError,
            bx.ReadTimeoutError,
            bx.ConnectionClosedError,
            Urllib3Error,
            ConnectionError,
        )
        extra = {"Range": byte_range} if byte_range else {}
        for attempt in range(1, self.read_attempts + 1):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key, **extra)
            except bx.ClientError as exc:
                code = self._code(exc)[0]
                if code == "InvalidRange":  # at or past the end: nothing there to read
                    return b""
                raise self.error("read", key, exc) from None
            except bx.BotoCoreError as exc:
                raise self.error("read", key, exc) from None
            except (Urllib3Error, ConnectionError) as exc:
                # Broken while botocore read an error answer's body: not retried inside it.
                if attempt == self.read_attempts:
                    raise self.error("read", key, exc) from None
                log.debug("reading %s broke (%s); retrying", key, type(exc).__name__)
                self._backoff(attempt)
                continue
            body = response["Body"]
            try:
                if limit is None:
                    return bytes(body.read())
                size = _object_size(response)
                if size is not None and size > limit:
                    raise too_large(self.description, key, size, limit)
                data = _read_at_most(body, limit + 1)
                if len(data) > limit:
                    raise too_large(self.description, key, None, limit)
                return data
            except broken as exc:
                if attempt == self.read_attempts:
                    raise self.error("read", key, exc) from None
                log.debug("reading %s broke (%s); retrying", key, type(exc).__name__)
            finally:
                body.close()
            self._backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> None:
        time.sleep(random.uniform(0.5, 1.0) * self.retry_base_delay * (2 ** (attempt - 1)))

    # -- large objects --------------------------------------------------------------------

    def writer(self, key: str) -> S3Writer:
        return S3Writer(self, key)


class S3Writer(PartWriter):
    """A streaming multipart upload (``PartWriter``); nothing is visible at ``key`` until
    ``commit()``. Any failure aborts the multipart upload so that no parts linger (and cost)
    in the bucket."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store = store
        self._upload_id: str | None = None
        self._parts: dict[int, dict[str, Any]] = {}
        super().__init__(
            description=store.description,
            key=key,
            workers=store.upload_workers,
            base_size=store.part_size,
            size_for=part_size_for,
            max_parts=MAX_PARTS,
            error=store.error,
            thread_name="distsync-s3-part",
        )

    def _checksum(self) -> dict[str, str]:
        return {"ChecksumAlgorithm": "CRC32"} if self._store._part_checksums else {}

    def _begin(self) -> None:
        created = self._store.call(
            "start uploading",
            self._key,
            self._store._client.create_multipart_upload,
            Key=self._key,
            **self._checksum(),
        )
        self._upload_id = str(created["UploadId"])

    def _send_part(self, number: int, buf: bytearray, filled: int) -> None:
        response = self._store.call(
            "upload",
            self._key,
            self._store._client.upload_part,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=buf if filled == len(buf) else bytes(buf[:filled]),
            **self._checksum(),
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        self._parts[number] = part

    def _put_whole(self, data: memoryview) -> None:
        self._store.call(
            "write", self._key, self._store._client.put_object, Key=self._key, Body=bytes(data)
        )

    def _complete(self) -> None:
        self._store.call(
            "finish uploading",
            self._key,
            self._store._client.complete_multipart_upload,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": [self._parts[n] for n in sorted(self._parts)]},
        )

    def _discard(self) -> None:
        if self._upload_id is None:
            return
        try:
            self._store.call(
                "abort the upload of",
                self._key,
                self._store._client.abort_multipart_upload,
                Key=self._key,
                UploadId=self._upload_id,
            )
        except StorageError as exc:
            log.warning(
                "%s (an unfinished multipart upload remains; a lifecycle rule removes it)", exc
            )


def client_config(
    *,
    endpoint: str | None,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
    pool: int,
) -> Any:
    """botocore settings: bounded retries with backoff, timeouts, a pool for every worker."""
    from botocore.config import Config as BotoConfig

    from distsync import __version__

    return BotoConfig(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=pool,
        tcp_keepalive=True,
        s3={
            # Over plain http SigV4 would SHA-256 every byte sent (half a CPU-second per GiB,
            # docs/benchmarks.md); botocore already leaves it out over https. What we upload
            # is authenticated end to end (chunk MACs, the sealed manifest), and the CRC32
            # checksum still catches damage in transit.
            "payload_signing_enabled": False,
            # S3-compatible stores and test servers rarely resolve bucket subdomains.
            **({"addressing_style": "path"} if endpoint else {}),
        },
        user_agent_extra=f"distsync/{__version__}",
    )


def _read_at_most(body: Any, count: int) -> bytes:
    """Up to ``count`` bytes of a streaming body (fewer only at its end)."""
    pieces: list[bytes] = []
    while count > 0:
        piece = body.read(count)
        if not piece:
            break
        pieces.append(bytes(piece))
        count -= len(piece)
    return b"".join(pieces)


def _object_size(response: dict[str, Any]) -> int | None:
    """The whole object's size from a GET's answer: ``Content-Range: bytes 0-9/1234`` for a
    ranged one, else its length (a store that ignores Range sends the whole object)."""
    content_range = str(response.get("ContentRange") or "")
    total = content_range.rpartition("/")[2]
    if total.isdigit():
        return int(total)
    length = response.get("ContentLength")
    return int(length) if isinstance(length, int) else None


def _public_url(url: str) -> str:
    """The endpoint without any user:password part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


class _S3Backend:
    """``Storage = "S3"`` (AWS S3 and S3-compatible servers) as a ``distsync.storage`` plugin."""

    api = STORAGE_API
    # AWS honours If-None-Match: * atomically; an S3-compatible server may not, so setup
    # decides (and records) it per store.
    capabilities = Capabilities(
        atomic_create=None,
        conditional_head=True,
        ranged_reads=True,
        presigned_urls=True,
        delete=True,
    )
    state_key = "S3"  # S3 and S3+BitTorrent at one bucket and prefix share a daemon's state

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        no_settings(cfg, "S3", table)  # its settings are [AwsCreds]

    def open(self, cfg: Config) -> S3Store:
        return S3Store.from_config(cfg)

    def setup(
        self,
        options: SetupOptions,
        upload_path: Path,
        daemon_path: Path,
        output_dir: str,
        say: Say,
        warn: Say,
    ) -> SetupResult:
        from distsync.provision.s3 import run_s3_setup
        from distsync.provision.s3_plain import run_s3_setup_without_iam

        if options.no_iam:  # an S3 endpoint without IAM (docs/setup-s3.md)
            return run_s3_setup_without_iam(
                options, upload_path, daemon_path, output_dir, say, warn
            )
        return run_s3_setup(options, upload_path, daemon_path, output_dir, say, warn)

    def in_place(self, options: SetupOptions, uploader: Config, daemon: Config) -> bool:
        from distsync.provision.s3 import s3_in_place

        return s3_in_place(options, uploader, daemon)


BACKEND = _S3Backend()
