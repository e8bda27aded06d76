"""``Storage = "Swift"``: a container on OpenStack Swift (Rackspace Cloud Files, OVHcloud, …).

Through python-swiftclient. Authentication is tempauth / Rackspace v1 (``APIKey``) or Keystone
v3 (``Password`` with a project; needs keystoneauth1, ``pip install 'distsync[keystone]'``).

The key layout under the prefix is the S3 one; three containers hold it:

- ``<container>``: the marker, the log and the artifacts' ciphertext (the uploader writes);
- ``<container>_segments``: the segments of Static Large Objects (the uploader writes);
- ``<container>_daemons``: records the daemons write (``peers/``, ``status/`` under the prefix).
  Swift ACLs are per container, so a daemon that may write its records gets a write ACL on
  this container only and can never write an artifact or a log entry (docs/setup-swift.md).

Failures are retried as in the S3 store: swiftclient retries every request that fails before
its response body starts (5xx, resets, timeouts) with exponential backoff, and reads carry a
bounded loop of their own for a body that breaks while being read. Every other failure becomes
one StorageError line naming the store, the action and the key, never a credential or token.

Large objects are streamed as a Static Large Object: the caller's writes fill segment buffers,
full segments upload on a small thread pool, and a fixed budget of buffers bounds memory; the
manifest is written on ``commit`` and makes the object visible at once. Segments grow with the
object (its size is unknown while streaming) so that Swift's 1,000-segment manifest limit is
reached only past 48 GiB with 8 MiB segments.

``create`` sends ``If-None-Match: *``. Swift honours it (412 when the key exists) but does not
make it atomic: two racing creates of the same key can both succeed. The log's layout for
such stores is chosen from ``distsync.storage.probe`` by setup (DESIGN §9, ``logorder``).

``presign`` (``Storage = "Swift+BitTorrent"``'s web seed) needs no key: setup signs one
TempURL for GET of every key under the artifacts' prefix and seals it into the store record
(``store_record.TempUrlGrant``); the daemon hands it to the store with ``use_temp_url``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

# Imported here, not on first use: the first connection is opened by whichever thread calls
# first, and two threads importing swiftclient at once deadlock on its module locks.
from swiftclient.client import Connection
from swiftclient.exceptions import ClientException

from distsync.config import Config, SwiftCreds
from distsync.errors import (
    AccessDeniedError,
    ConfigError,
    FormatError,
    NotFoundError,
    StorageError,
)
from distsync.plugin_config import no_settings
from distsync.storage.api import STORAGE_API, Capabilities
from distsync.storage.base import StoredObject
from distsync.storage.parts import PartWriter
from distsync.store_record import TempUrlGrant

if TYPE_CHECKING:
    from distsync.provision.options import Say, SetupOptions, SetupResult

__all__ = [
    "BACKEND",
    "DAEMONS_SUFFIX",
    "DAEMON_SUBTREES",
    "DEFAULT_SEGMENT_SIZE",
    "MAX_SEGMENTS",
    "SEGMENTS_SUFFIX",
    "ObjectTooLarge",
    "SwiftStore",
    "connector_for",
    "segment_size_for",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1 << 20
DEFAULT_SEGMENT_SIZE = 8 * MiB
MAX_SEGMENTS = 1000  # Swift's default max_manifest_segments
_SEGMENTS_PER_TIER = 200
_MAX_GROWTH = 4  # segments grow to at most 16x the base size (128 MiB for 8 MiB)
_LIST_PAGE = 1000
_READ_PIECE = 256 << 10
# Under the prefix, what the daemons write; it lives in the ``_daemons`` container.
DAEMON_SUBTREES = ("peers/", "status/")
SEGMENTS_SUFFIX = "_segments"
DAEMONS_SUFFIX = "_daemons"


class ObjectTooLarge(FormatError):
    """A small object (manifest, marker, record) is larger than a reader accepts."""


def segment_size_for(number: int, base: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Size of SLO segment ``number`` (1-based): doubling every 200 segments, 16x at most.

    With 8 MiB segments: 1.6 GiB in 8 MiB segments, 11 GiB within 32 MiB ones, and 1,000
    segments hold 48.4 GiB (49,600 MiB).
    """
    return base << min((number - 1) // _SEGMENTS_PER_TIER, _MAX_GROWTH)


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}"


class _Reader:
    """A seekable, read-only view of a buffer: swiftclient re-sends it on a retry (it can
    only retry a PUT whose body it can rewind) without a copy of the segment."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._pos + size
        piece = bytes(self._view[self._pos : end])
        self._pos += len(piece)
        return piece

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else (self._pos + pos if whence == 1 else len(self) + pos)
        return self._pos


# -- connections ---------------------------------------------------------------------------


class _Connector:
    """Makes one swiftclient Connection per thread (they are not thread-safe) that share one
    login: tempauth/v1 tokens are handed on, a Keystone session plugin is shared."""

    def __init__(
        self, creds: SwiftCreds, *, timeout: float, retries: int, backoff: float, path: Any
    ) -> None:
        self.creds = creds
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._local = threading.local()
        self._lock = threading.Lock()
        self._shared: tuple[str, str] | None = None
        self._keystone_auth: Any = None
        self._keystone_session: Any = None
        if creds.keystone:
            try:
                from keystoneauth1 import session as ksa_session
                from keystoneauth1.identity import v3
            except ImportError:
                raise ConfigError(
                    path,
                    "SwiftCreds.Password",
                    "Keystone v3 needs keystoneauth1: pip install 'distsync[keystone]'",
                ) from None
            self._keystone_session = ksa_session
            self._keystone_auth = v3.Password(
                auth_url=creds.auth_url,
                username=creds.username,
                password=creds.password or "",  # never empty here: creds.keystone
                project_name=creds.project_name,
                user_domain_name=creds.user_domain_name,
                project_domain_name=creds.project_domain_name,
            )

    def get(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._new()
        return conn

    def _new(self) -> Any:
        common: dict[str, Any] = {
            "retries": self.retries,
            "starting_backoff": self.backoff,
            "max_backoff": max(self.backoff, 8.0),
            "timeout": self.timeout,
        }
        if self._keystone_auth is not None:
            session = self._keystone_session.Session(auth=self._keystone_auth, timeout=self.timeout)
            return Connection(
                session=session,
                os_options={
                    "region_name": self.creds.region,
                    "service_type": "object-store",
                    "interface": "public",
                },
                **common,
            )
        with self._lock:
            shared = self._shared
        return Connection(
            authurl=self.creds.auth_url,
            user=self.creds.username,
            key=self.creds.api_key,
            auth_version="1",
            preauthurl=shared[0] if shared else None,
            preauthtoken=shared[1] if shared else None,
            **common,
        )

    def share(self, conn: Any) -> None:
        """After a call: let threads that connect later reuse the login."""
        if self._keystone_auth is None and conn.url and conn.token:
            with self._lock:
                self._shared = (conn.url, conn.token)

    def identity(self) -> str:
        """The referent that names this identity in a container ACL (after a login):
        ``project_id:user_id`` on Keystone, the user name (``account:user``) on tempauth."""
        if self._keystone_auth is not None:
            from keystoneauth1 import session as ksa_session

            sess = ksa_session.Session(auth=self._keystone_auth, timeout=self.timeout)
            return f"{sess.get_project_id()}:{sess.get_user_id()}"
        return self.creds.username


def connector_for(
    creds: SwiftCreds,
    path: object,
    *,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
) -> _Connector:
    """Connections for ``creds``; ``path`` names the config in errors about it."""
    return _Connector(creds, timeout=timeout, retries=retries, backoff=backoff, path=path)


# -- the store -----------------------------------------------------------------------------


class SwiftStore:
    """A container (plus its ``_segments`` and ``_daemons`` companions) as a ``Store``."""

    def __init__(
        self,
        connector: _Connector,
        container: str,
        *,
        prefix: str = "distsync/v3/",
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        upload_workers: int = 4,
        read_attempts: int = 5,
        retry_base_delay: float = 0.2,
        list_page: int = _LIST_PAGE,
    ) -> None:
        self._connector = connector
        self.list_page = list_page
        self.container = container
        self.segments_container = container + SEGMENTS_SUFFIX
        self.daemons_container = container + DAEMONS_SUFFIX
        self.prefix = prefix
        self.segment_size = segment_size
        self.upload_workers = max(1, upload_workers)
        self.read_attempts = max(1, read_attempts)
        self.retry_base_delay = retry_base_delay
        self.description = f"Swift container {container} at {_public_url(connector.creds.auth_url)}"
        self._container_checked = False
        self.temp_url: TempUrlGrant | None = None

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        **kwargs: Any,
    ) -> SwiftStore:
        if cfg.swift is None:
            raise cfg.error("SwiftCreds", 'is required by Storage = "Swift"')
        connector = connector_for(
            cfg.swift, cfg.path, timeout=timeout, retries=retries, backoff=backoff
        )
        return cls(connector, cfg.storage_bucket, prefix=cfg.prefix, **kwargs)

    def identity(self) -> str:
        """How container ACLs name the identity this store logs in as."""
        self.call("log in", "", _log_in)
        return self.call("log in", "", lambda _conn: self._connector.identity())

    def storage_url(self) -> str:
        """The account's URL this identity's login hands out (``.../v1/AUTH_acct``)."""
        conn = self._connector.get()
        if not conn.url:
            self.call("log in", "", _log_in)
        return str(conn.url).rstrip("/")

    def use_temp_url(self, grant: TempUrlGrant | None) -> None:
        """The store record's TempURL grant, from which ``presign`` makes URLs."""
        self.temp_url = grant

    def presign(self, key: str, expires: int) -> str:
        """A GET URL for ``key`` under the grant's prefix, for libtorrent's web seed (as
        S3's presigned URLs are). It is valid until the grant expires, whatever ``expires``
        asks: setup signed it, and this identity holds no key to sign another."""
        grant = self.temp_url
        if grant is None:
            raise StorageError(
                f"{self.description}: the store record holds no TempURL for the web seed "
                "(set up with --storage swift+bittorrent)"
            )
        if not key.startswith(grant.key_prefix):
            raise StorageError(f"{self.description}: the TempURL does not cover {key}")
        if grant.expires <= time.time():
            raise StorageError(
                f"{self.description}: the store's TempURL expired at "
                f"{time.strftime('%Y-%m-%d', time.gmtime(grant.expires))} (docs/setup-swift.md)"
            )
        base = _public_url(self.storage_url())
        query = urlencode(
            {
                "temp_url_sig": grant.signature,
                "temp_url_expires": str(grant.expires),
                "temp_url_prefix": grant.key_prefix,
            }
        )
        return f"{base}{quote(grant.container_path)}/{quote(key)}?{query}"

    # -- routing and errors ---------------------------------------------------------------

    def container_for(self, key: str) -> str:
        """Daemon-written records live in their own container (see the module's docstring)."""
        for subtree in DAEMON_SUBTREES:
            if key.startswith(self.prefix + subtree):
                return self.daemons_container
        return self.container

    def error(self, action: str, key: str, exc: BaseException) -> StorageError:
        """One line for any swiftclient/requests failure; never a token or a key."""
        from requests import exceptions as rx
        desc = self.description
        what = f"{action} {key}".rstrip()
        if isinstance(exc, ClientException):
            status = exc.http_status
            if status == 404:
                return NotFoundError(f"{desc}: no object {key}")
            if status == 401:
                return StorageError(f"{desc}: the store refused the credentials (HTTP 401)")
            if status == 403:
                return AccessDeniedError(
                    f"{desc}: access denied: cannot {what} "
                    "(the container ACLs do not allow this identity to)"
                )
            if status is None:
                # swiftclient's own complaints (bad auth answer, no endpoint in the catalog).
                message = " ".join(str(exc.msg).split())[:200]
                return StorageError(f"{desc}: cannot {what}: {message}")
            reason = " ".join(str(exc.http_reason or "").split())
            return StorageError(f"{desc}: cannot {what}: HTTP {status} {reason}".rstrip())
        if _caused_by(exc, _unreachable):
            return StorageError(
                f"{desc}: cannot {what}: the endpoint is unreachable (connection failed "
                "after retries)"
            )
        if _caused_by(exc, _timeouts):
            return StorageError(f"{desc}: cannot {what}: the store stopped answering")
        if isinstance(exc, (rx.RequestException, OSError)) or _caused_by(exc, _urllib3_errors):
            return StorageError(f"{desc}: cannot {what}: the connection kept breaking mid-transfer")
        keystone = _keystone_error(exc)
        if keystone:
            return StorageError(f"{desc}: cannot {what}: Keystone: {keystone}")
        return StorageError(f"{desc}: cannot {what}: {type(exc).__name__}")

    def call(self, action: str, key: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` (swiftclient retries inside); failures become StorageError."""
        conn = self._connector.get()
        try:
            result = fn(conn)
        except Exception as exc:
            if isinstance(exc, StorageError):
                raise
            raise self.error(action, key, exc) from None
        self._connector.share(conn)
        return result

    # -- small objects --------------------------------------------------------------------

    def create(self, key: str, data: bytes) -> bool:
        container = self.container_for(key)
        conn = self._connector.get()
        try:
            conn.put_object(
                container,
                key,
                _Reader(data),
                content_length=len(data),
                headers={"If-None-Match": "*"},
            )
            self._connector.share(conn)
            return True
        except ClientException as exc:
            if exc.http_status != 412:
                raise self.error("create", key, exc) from None
        except Exception as exc:
            raise self.error("create", key, exc) from None
        # A retried PUT whose first attempt did land also answers 412. The body holds fresh
        # random IVs, so finding exactly our bytes there means the key is ours after all.
        with contextlib.suppress(StorageError):
            return self.get(key, limit=len(data)) == data
        return False

    def put(self, key: str, data: bytes) -> None:
        container = self.container_for(key)
        self.call(
            "write",
            key,
            lambda conn: conn.put_object(container, key, _Reader(data), content_length=len(data)),
        )

    def get(self, key: str, limit: int = 1 << 20) -> bytes:
        """A small object whole; ObjectTooLarge (exit 3) past ``limit`` bytes, so a planted
        huge object cannot exhaust a reader's memory."""
        return self._read(key, None, limit)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return self._read(key, f"bytes={start}-{start + length - 1}", None)

    def size(self, key: str) -> int:
        container = self.container_for(key)
        head = self.call("read", key, lambda conn: conn.head_object(container, key))
        return int(head["content-length"])

    def delete(self, key: str) -> None:
        """Remove ``key``, with its segments if it is a Static Large Object; a missing key is
        not an error. (Swift answers 200 to a segment-deleting DELETE of a plain object and
        keeps it, hence the HEAD first.)"""
        container = self.container_for(key)
        conn = self._connector.get()
        try:
            head = conn.head_object(container, key)
            if str(head.get("x-static-large-object", "")).lower() != "true":
                conn.delete_object(container, key)
                return
            conn.delete_object(container, key, query_string="multipart-manifest=delete")
            # That is a bulk delete: it answers 200 even when it failed, so look again.
            conn.head_object(container, key)
        except ClientException as exc:
            if exc.http_status != 404:
                raise self.error("delete", key, exc) from None
            return
        except Exception as exc:
            raise self.error("delete", key, exc) from None
        raise StorageError(f"{self.description}: cannot delete {key}: it is still there")

    def changed(self, key: str, since: str | None) -> str | None:
        container = self.container_for(key)
        headers = {"If-None-Match": since} if since else {}
        conn = self._connector.get()
        try:
            head = conn.head_object(container, key, headers=headers)
        except ClientException as exc:
            if exc.http_status == 304:
                return None
            if exc.http_status == 404:
                self._check_container()
                return None if since == "" else ""
            raise self.error("check", key, exc) from None
        except Exception as exc:
            raise self.error("check", key, exc) from None
        self._connector.share(conn)
        tag = str(head.get("etag", ""))
        return None if tag == since else tag

    def _check_container(self) -> None:
        """A 404 on HEAD cannot tell a missing key from a missing container: ask once."""
        if self._container_checked:
            return
        try:
            self._connector.get().head_container(self.container)
        except ClientException as exc:
            if exc.http_status == 404:
                raise StorageError(
                    f"{self.description}: the container does not exist (run `distsync setup`)"
                ) from None
            # Anything else (e.g. 403 for an identity that may only read objects) proves nothing.
        except Exception as exc:
            raise self.error("check", self.container, exc) from None
        self._container_checked = True

    def inventory(self, prefix: str) -> Iterator[StoredObject]:
        """The listing's sizes (a large object's manifest counts as its own small size)."""
        container = self.container_for(prefix)
        marker = ""
        while True:
            try:
                _headers, items = self._connector.get().get_container(
                    container, prefix=prefix, marker=marker, limit=self.list_page
                )
            except ClientException as exc:
                if exc.http_status == 404 and container != self.container:
                    return
                raise self.error("list", prefix, exc) from None
            except Exception as exc:
                raise self.error("list", prefix, exc) from None
            if not items:
                return
            for item in items:
                when = datetime.datetime.fromisoformat(str(item["last_modified"]))
                modified = when.replace(tzinfo=datetime.timezone.utc).timestamp()
                yield StoredObject(str(item["name"]), int(item["bytes"]), modified)
            marker = str(items[-1]["name"])

    def list_after(self, prefix: str, start_after: str) -> Iterator[str]:
        container = self.container_for(prefix)
        marker = start_after
        while True:
            conn = self._connector.get()
            try:
                _headers, items = conn.get_container(
                    container, prefix=prefix, marker=marker, limit=self.list_page
                )
            except ClientException as exc:
                if exc.http_status == 404:
                    if container != self.container:  # no daemon has written a record yet
                        return
                    raise StorageError(
                        f"{self.description}: the container does not exist (run `distsync setup`)"
                    ) from None
                raise self.error("list", prefix, exc) from None
            except Exception as exc:
                raise self.error("list", prefix, exc) from None
            if not items:
                return
            for item in items:
                yield str(item["name"])
            marker = str(items[-1]["name"])

    def _read(self, key: str, byte_range: str | None, limit: int | None) -> bytes:
        """GET (a range of) an object, retrying a body that breaks while being read."""
        container = self.container_for(key)
        headers = {"Range": byte_range} if byte_range else {}
        for attempt in range(1, self.read_attempts + 1):
            conn = self._connector.get()
            try:
                head, body = conn.get_object(
                    container, key, resp_chunk_size=_READ_PIECE, headers=headers
                )
            except ClientException as exc:
                if exc.http_status == 416:  # at or past the end: nothing there to read
                    return b""
                raise self.error("read", key, exc) from None
            except Exception as exc:
                raise self.error("read", key, exc) from None
            self._connector.share(conn)
            try:
                expected = int(head.get("content-length", -1))
                if limit is not None and expected > limit:
                    raise ObjectTooLarge(
                        f"{self.description}: {key} is {expected} bytes, more than the "
                        f"{limit} a record may have"
                    )
                data = bytearray()
                for piece in body:
                    data += piece
                    if limit is not None and len(data) > limit:
                        raise ObjectTooLarge(
                            f"{self.description}: {key} is more than the {limit} bytes "
                            "a record may have"
                        )
                if expected >= 0 and len(data) != expected:
                    raise ConnectionError(f"short body: {len(data)} of {expected} bytes")
                return bytes(data)
            except ObjectTooLarge:
                raise
            except Exception as exc:
                if attempt == self.read_attempts:
                    raise self.error("read", key, exc) from None
                log.debug("reading %s broke (%s); retrying", key, type(exc).__name__)
                # The connection is in an unknown state: the next attempt opens a new one.
                with contextlib.suppress(Exception):
                    conn.close()
            finally:
                with contextlib.suppress(Exception):
                    body.close()
            time.sleep(random.uniform(0.5, 1.0) * self.retry_base_delay * (2 ** (attempt - 1)))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- large objects --------------------------------------------------------------------

    def writer(self, key: str) -> SwiftWriter:
        return SwiftWriter(self, key)


def _caused_by(exc: BaseException, kinds: Callable[[], tuple[type[BaseException], ...]]) -> bool:
    """Whether ``exc`` or what it wraps (requests and urllib3 nest their causes) is one of
    ``kinds()``."""
    wanted = kinds()
    seen: list[object] = [exc]
    for _depth in range(8):
        if not seen:
            return False
        current = seen.pop()
        if isinstance(current, wanted):
            return True
        if isinstance(current, BaseException):
            seen.extend(arg for arg in current.args if isinstance(arg, BaseException))
            for attr in ("reason", "__cause__", "__context__"):
                inner = getattr(current, attr, None)
                if isinstance(inner, BaseException):
                    seen.append(inner)
    return False


def _timeouts() -> tuple[type[BaseException], ...]:
    from requests.exceptions import ReadTimeout
    from urllib3.exceptions import ReadTimeoutError

    return (ReadTimeout, ReadTimeoutError, TimeoutError)


def _unreachable() -> tuple[type[BaseException], ...]:
    from requests.exceptions import ConnectTimeout
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    return (NewConnectionError, ConnectionRefusedError, ConnectTimeout, ConnectTimeoutError)


def _urllib3_errors() -> tuple[type[BaseException], ...]:
    from urllib3.exceptions import HTTPError

    return (HTTPError,)


def _keystone_error(exc: BaseException) -> str:
    try:
        from keystoneauth1 import exceptions as kx
    except ImportError:
        return ""
    if isinstance(exc, kx.Unauthorized):
        return "the credentials were refused"
    if isinstance(exc, kx.EndpointNotFound):
        return "no object-store endpoint in the catalog (check Region)"
    if isinstance(exc, kx.ConnectFailure):
        return "the login URL is unreachable"
    if isinstance(exc, kx.ClientException):
        return type(exc).__name__
    return ""


def _log_in(conn: Any) -> None:
    conn.url, conn.token = conn.get_auth()


def _delete_object(conn: Any, *, container: str, name: str) -> None:
    conn.delete_object(container, name)


class SwiftWriter(PartWriter):
    """A streaming Static Large Object (``PartWriter``); nothing is visible at ``key`` until
    ``commit()``. Segments go to ``<container>_segments`` as ``<key>/<upload id>/<number>``;
    a failure or ``abort`` deletes the uploaded segments."""

    noun = "segments"

    def __init__(self, store: SwiftStore, key: str) -> None:
        self._store = store
        self._container = store.container_for(key)
        self._upload_id = uuid.uuid4().hex
        self._segments: dict[int, dict[str, Any]] = {}
        super().__init__(
            description=store.description,
            key=key,
            workers=store.upload_workers,
            base_size=store.segment_size,
            size_for=segment_size_for,
            max_parts=MAX_SEGMENTS,
            error=store.error,
            thread_name="distsync-swift-segment",
        )

    def _segment_name(self, number: int) -> str:
        return f"{self._key}/{self._upload_id}/{number:08d}"

    def _send_part(self, number: int, buf: bytearray, filled: int) -> None:
        store = self._store
        name = self._segment_name(number)
        etag = store.call(
            "upload",
            self._key,
            lambda conn: conn.put_object(
                store.segments_container,
                name,
                _Reader(memoryview(buf)[:filled]),
                content_length=filled,
            ),
        )
        self._segments[number] = {
            "path": f"/{store.segments_container}/{name}",
            "etag": etag,
            "size_bytes": filled,
        }

    def _put_whole(self, data: memoryview) -> None:
        self._store.call(
            "write",
            self._key,
            lambda conn: conn.put_object(
                self._container, self._key, _Reader(data), content_length=len(data)
            ),
        )

    def _complete(self) -> None:
        manifest = json.dumps([self._segments[n] for n in sorted(self._segments)])
        self._store.call(
            "finish uploading",
            self._key,
            lambda conn: conn.put_object(
                self._container,
                self._key,
                _Reader(manifest.encode()),
                content_length=len(manifest),
                query_string="multipart-manifest=put",
            ),
        )

    def _discard(self) -> None:
        left = []
        container = self._store.segments_container
        for number in sorted(self._segments):
            name = self._segment_name(number)
            try:
                self._store.call(
                    "remove a segment of",
                    self._key,
                    functools.partial(_delete_object, container=container, name=name),
                )
            except NotFoundError:
                continue
            except StorageError as exc:
                left.append(name)
                log.debug("%s", exc)
        if left:
            log.warning(
                "%s: %d segment(s) of an aborted upload remain in %s under %s/%s/",
                self._store.description,
                len(left),
                container,
                self._key,
                self._upload_id,
            )


class _SwiftBackend:
    """``Storage = "Swift"`` (native OpenStack Swift) as a ``distsync.storage`` plugin."""

    api = STORAGE_API
    # Swift accepts If-None-Match: * but two racing creates can both win (DESIGN §9): what
    # a store does is probed by setup and kept in its record.
    capabilities = Capabilities(
        atomic_create=None,
        conditional_head=True,
        ranged_reads=True,
        presigned_urls=True,  # TempURLs, with the key setup grants in the store record
        delete=True,
    )
    # Swift's daemons kept their state under the S3 kind's name before plugins existed.
    state_key = "S3"

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        no_settings(cfg, "Swift", table)  # its settings are [SwiftCreds]
        if cfg.swift is None:
            raise cfg.error("SwiftCreds", f'is required by Storage = "{cfg.storage}"')

    def open(self, cfg: Config) -> SwiftStore:
        return SwiftStore.from_config(cfg)

    def setup(
        self,
        options: SetupOptions,
        upload_path: Path,
        daemon_path: Path,
        output_dir: str,
        say: Say,
        warn: Say,
    ) -> SetupResult:
        from distsync.provision.swift import run_swift_setup

        return run_swift_setup(options, upload_path, daemon_path, output_dir, say, warn)

    def in_place(self, options: SetupOptions, uploader: Config, daemon: Config) -> bool:
        from distsync.provision.swift import swift_in_place

        return swift_in_place(options, uploader, daemon)


BACKEND = _SwiftBackend()
