"""The store record: which store this is, sealed under the fleet's SharedSecret.

``distsync setup`` writes ``{prefix}store`` when it creates a store, sealed like every other
record (``distsync.sealed``)::

    {"store_id": "<32 hex digits>", "format": 1, "created_at": 1767225600.0,
     "capabilities": {"atomic_create": true}}

``format`` is the oldest reader format that handles the store right: 1 where the store's
create-if-absent is atomic, 2 where it is not (the tagged log layout, ``distsync.logorder``),
so that a distsync too old to know that layout refuses the store ("upgrade distsync") rather
than claiming entries it would lose and overlooking those others write.

A ``Swift+BitTorrent`` store's record also carries ``temp_url``: a Swift TempURL signature
for GET under the artifacts' prefix (``TempUrlGrant``), which the daemons turn into their
BitTorrent web seed. Setup signs it with the account's key; the daemons never hold that key,
which would let them sign any method on any object of the account.

It answers two questions nothing else in the bucket can:

- *Is this config's secret the store's?* A record that does not open means a different
  SharedSecret (or an altered record), where an empty-looking store would otherwise be all a
  user saw. Every door (CLI, modules, daemon) checks it first: exit 3.
- *Is this still the store a daemon followed?* The id is random per setup, so a store
  re-created at the same bucket and prefix (a new log starting at 1) is told apart from the
  old one; the daemon's state is bound to it (``state.DaemonState.follow_store``).

The body is forward compatible: readers ignore keys, and capability names, they do not know.
A store set up before records existed has none: it keeps working, with a warning.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distsync.errors import AccessDeniedError, FormatError, IntegrityError, NotFoundError
from distsync.layout import Layout
from distsync.sealed import RecordKind, open_sealed, seal_record_body
from distsync.storage.base import Store

__all__ = [
    "CAPABILITIES",
    "FORMAT_VERSION",
    "Capability",
    "StoreRecord",
    "TempUrlGrant",
    "new_store_record",
    "open_store_record",
    "parse_store_record",
    "read_store_record",
    "seal_store_record",
    "verify_store",
]

log = logging.getLogger(__name__)

STORE_RECORD = RecordKind(
    magic=b"DSS3",
    purpose="v3 store record",
    label=b"distsync v3 store record",
    noun="store record",
    max_size=16 << 10,
)
FORMAT_VERSION = 2
# What a store needs of its readers: the tagged log layout came with format 2.
_ATOMIC_LOG_FORMAT = 1
_STORE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Capability:
    """Something a store can or cannot do, as setup found it."""

    kinds: tuple[type, ...]  # the JSON value's Python types
    default: Any  # what a record written before this capability existed means
    meaning: str

    def accepts(self, value: Any) -> bool:
        # bool is an int in Python, never what a numeric capability means.
        if isinstance(value, bool) and bool not in self.kinds:
            return False
        return isinstance(value, self.kinds)


# Adding a capability is one line here (and setup filling it in). Readers of an older version
# ignore names they do not know, so a newer setup's record still opens everywhere.
CAPABILITIES: dict[str, Capability] = {
    "atomic_create": Capability(
        (bool,), True, "a conditional create (If-None-Match: *, O_EXCL) lets only one writer win"
    ),
}


_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_MAX_PATH = 2048


@dataclass(frozen=True)
class TempUrlGrant:
    """A Swift TempURL signature (``temp_url_prefix``, HMAC-SHA256) allowing GET of every
    object whose key starts with ``key_prefix`` in the container at ``container_path``."""

    container_path: str  # e.g. /v1/AUTH_acct/distsync-f037e3cfdace
    key_prefix: str  # e.g. distsync/v3/objects/
    signature: str
    expires: int  # Unix time

    def body(self) -> dict[str, Any]:
        return {
            "container_path": self.container_path,
            "key_prefix": self.key_prefix,
            "signature": self.signature,
            "expires": self.expires,
        }


def _temp_url_grant(raw: Any) -> TempUrlGrant:
    if not isinstance(raw, Mapping):
        raise FormatError("store record: temp_url is not a table")
    path, prefix = raw.get("container_path"), raw.get("key_prefix")
    signature, expires = raw.get("signature"), raw.get("expires")
    texts_ok = all(
        isinstance(text, str) and text.isprintable() and 0 < len(text) <= _MAX_PATH
        for text in (path, prefix)
    )
    if not texts_ok or not str(path).startswith("/v1/") or not str(prefix).endswith("/"):
        raise FormatError("store record: temp_url names no container path and key prefix")
    if not isinstance(signature, str) or not _HEX_SIGNATURE.fullmatch(signature):
        raise FormatError("store record: temp_url signature is not 64 hex digits")
    if isinstance(expires, bool) or not isinstance(expires, int) or expires <= 0:
        raise FormatError("store record: temp_url expires is not a positive integer")
    return TempUrlGrant(str(path), str(prefix), signature, expires)


@dataclass(frozen=True)
class StoreRecord:
    store_id: str
    format: int
    created_at: float
    # Every known capability, defaults filled in for those the record does not name.
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    temp_url: TempUrlGrant | None = None  # Swift+BitTorrent's web seed

    def capability(self, name: str) -> Any:
        return self.capabilities.get(name, CAPABILITIES[name].default)

    def body(self) -> dict[str, Any]:
        body = {
            "store_id": self.store_id,
            "format": self.format,
            "created_at": self.created_at,
            "capabilities": dict(self.capabilities),
        }
        if self.temp_url is not None:
            body["temp_url"] = self.temp_url.body()
        return body


def new_store_record(
    created_at: float,
    capabilities: Mapping[str, Any],
    *,
    temp_url: TempUrlGrant | None = None,
) -> StoreRecord:
    """A record for a store being created now, with a fresh random id."""
    atomic = capabilities.get("atomic_create", CAPABILITIES["atomic_create"].default)
    body: dict[str, Any] = {
        "store_id": secrets.token_hex(16),
        "format": _ATOMIC_LOG_FORMAT if atomic else FORMAT_VERSION,
        "created_at": created_at,
        "capabilities": dict(capabilities),
    }
    if temp_url is not None:
        body["temp_url"] = temp_url.body()
    return parse_store_record(body)


def parse_store_record(raw: Mapping[str, Any]) -> StoreRecord:
    """Check an opened record's body (pure); FormatError names what is wrong."""
    store_id, version = raw.get("store_id"), raw.get("format")
    created_at, found = raw.get("created_at"), raw.get("capabilities", {})
    if not isinstance(store_id, str) or not _STORE_ID.fullmatch(store_id):
        raise FormatError("store record: store_id is not 32 hex digits")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FormatError("store record: format is not a positive integer")
    if version > FORMAT_VERSION:
        raise FormatError(
            f"this store was set up by a newer distsync (store format {version}; this version "
            f"reads {FORMAT_VERSION}): upgrade distsync"
        )
    if (
        isinstance(created_at, bool)
        or not isinstance(created_at, (int, float))
        or not (isinstance(created_at, int) or math.isfinite(created_at))
    ):
        raise FormatError("store record: created_at is not a finite number")
    if not isinstance(found, Mapping):
        raise FormatError("store record: capabilities is not a table")
    capabilities: dict[str, Any] = {}
    for name, capability in CAPABILITIES.items():
        value = found.get(name, capability.default)
        if not capability.accepts(value):
            raise FormatError(f"store record: capability {name} has the wrong type")
        capabilities[name] = value
    grant = raw.get("temp_url")
    temp_url = None if grant is None else _temp_url_grant(grant)
    return StoreRecord(store_id, version, float(created_at), capabilities, temp_url)


def seal_store_record(secret: bytes, layout: Layout, record: StoreRecord) -> bytes:
    return seal_record_body(STORE_RECORD, secret, layout.store_record, record.body())


def open_store_record(secret: bytes, key: str, data: bytes, where: str) -> StoreRecord:
    """Verify and check the record stored at ``key`` of the store described by ``where``."""
    try:
        return parse_store_record(open_sealed(STORE_RECORD, secret, key, data))
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None
    except IntegrityError:
        raise IntegrityError(
            f"this store was set up with a different SharedSecret: the store record of "
            f"{where} does not open with this config's secret (or it was altered)"
        ) from None


def read_store_record(store: Store, layout: Layout, secret: bytes) -> StoreRecord | None:
    """The store's record, or None when it has none (a store set up before records existed).

    IntegrityError with the message a user needs when this secret does not open it.
    """
    key = layout.store_record
    try:
        data = store.get(key)
    except NotFoundError:
        return None
    return open_store_record(secret, key, data, store.description)


def verify_store(store: Store, layout: Layout, secret: bytes) -> StoreRecord | None:
    """What every door does first: fail (exit 3) when this secret is not the store's, warn
    when the store has no record to tell. None when there is no record to go by."""
    try:
        record = read_store_record(store, layout, secret)
    except AccessDeniedError:
        # On S3 an identity that may not list a key gets "access denied" for a missing one,
        # and an uploader policy written before store records existed may not read it at all.
        log.warning(
            "%s: cannot read the store record %s (none exists, or this identity's policy "
            "predates it); a wrong SharedSecret would look like an empty store",
            store.description,
            layout.store_record,
        )
        return None
    if record is None:
        log.warning(
            "%s has no store record (it was set up by an older distsync); a wrong SharedSecret "
            "would look like an empty store",
            store.description,
        )
    return record
