"""Small sealed records in the bucket: manifests, peer records, and every record that follows.

One construction for all of them, so each new kind of record gets the same guarantees::

    stored = magic (4 bytes) || AEAD_AES_128_CBC_HMAC_SHA_256(K).seal(JSON body, A)
    K      = derive_key(secret, kind.purpose)          (one HKDF label per kind)
    A      = kind.label || 0x00 || the record's own object key (UTF-8)

Binding the object key into the associated data means a record copied or moved to another key
fails authentication, and a separate key per kind means a record of one kind can never be
passed off as another. Records are small: anything larger than ``kind.max_size`` is refused
before any cryptography runs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distsync.crypto.aead import CbcHmacAead
from distsync.crypto.keys import derive_key
from distsync.errors import FormatError, IntegrityError

__all__ = ["RecordKind", "open_sealed", "seal_record_body"]


@dataclass(frozen=True)
class RecordKind:
    """What distinguishes one kind of sealed record from another."""

    magic: bytes  # 4 bytes at the start of the stored object
    purpose: str  # the HKDF label of its key
    label: bytes  # the associated data's prefix
    noun: str  # how messages name it: "manifest", "peer record"
    max_size: int = 64 << 10

    def __post_init__(self) -> None:
        if len(self.magic) != 4:
            raise ValueError("a record kind's magic is 4 bytes")


@functools.lru_cache(maxsize=32)
def _aead(secret: bytes, purpose: str) -> CbcHmacAead:
    return CbcHmacAead.draft(derive_key(secret, purpose))


def _associated_data(kind: RecordKind, key: str) -> bytes:
    return kind.label + b"\x00" + key.encode("utf-8")


def seal_record_body(kind: RecordKind, secret: bytes, key: str, body: Mapping[str, Any]) -> bytes:
    """The bytes to store at ``key`` for ``body`` (canonical JSON: sorted keys, no spaces)."""
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    sealed = kind.magic + _aead(secret, kind.purpose).seal(raw, _associated_data(kind, key))
    if len(sealed) > kind.max_size:
        raise ValueError(f"a {kind.noun} is limited to {kind.max_size} bytes")
    return sealed


def open_sealed(kind: RecordKind, secret: bytes, key: str, data: bytes) -> dict[str, Any]:
    """Verify the record stored at ``key`` and return its JSON object.

    IntegrityError when it fails authentication (wrong secret, altered, or moved from another
    key); FormatError when it is not a record of this kind at all.
    """
    if len(data) > kind.max_size:
        raise FormatError(f"{key}: {len(data)} bytes is too large for a {kind.noun}")
    if not data.startswith(kind.magic):
        raise FormatError(f"{key}: not a distsync {kind.noun}")
    try:
        body = _aead(secret, kind.purpose).open(
            data[len(kind.magic) :], _associated_data(kind, key)
        )
    except IntegrityError:
        raise IntegrityError(
            f"{key}: {kind.noun} failed authentication (wrong secret, altered, or moved from "
            "another key)"
        ) from None
    try:
        raw = json.loads(body, parse_constant=_refuse_constant)
    except ValueError:
        raise FormatError(f"{key}: authenticated {kind.noun} is not valid JSON") from None
    if not isinstance(raw, dict):
        raise FormatError(f"{key}: authenticated {kind.noun} is not a JSON object")
    return raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a record may hold")
