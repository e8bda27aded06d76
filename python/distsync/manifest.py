"""Manifests: the small encrypted record each upload writes into the global log.

A manifest says what an artifact is (name, size, plaintext SHA-256, mode) and where its
ciphertext lives. It is sealed with a key derived for this purpose alone, and its associated
data is its own object key, so a manifest copied or moved to another key — the way to replay
an old artifact as new — fails authentication.

Stored bytes: ``b"DSM3"`` || AEAD_AES_128_CBC_HMAC_SHA_256(JSON).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from distsync.crypto.aead import CbcHmacAead
from distsync.crypto.keys import derive_key
from distsync.errors import FormatError, IntegrityError, UsageError

__all__ = ["Manifest", "Version", "open_manifest", "seal_manifest", "validate_name"]

MAGIC = b"DSM3"
_MAX_NAME = 255


def validate_name(name: str, error: type[Exception] = UsageError) -> str:
    """An artifact name is a plain file name: it becomes a path under OutputDir."""
    if (
        not name
        or len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME
        or name in (".", "..")
        or name.startswith(".")
        or any(ch in name for ch in "/\\\0")
        or any(ord(ch) < 32 for ch in name)
    ):
        raise error(f"invalid artifact name {name!r}: use a plain file name not starting with '.'")
    return name


@dataclass(frozen=True)
class Manifest:
    name: str
    size: int
    sha256: str
    object_key: str
    object_size: int
    chunk_size: int
    uploaded_at: float
    uploader: str
    mode: int = 0o644
    format: str = "v3"
    torrent: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class Version:
    """A manifest at its place in the log: ``seq`` orders versions, whatever the clocks say."""

    seq: int
    key: str
    manifest: Manifest

    @property
    def version_id(self) -> str:
        return str(self.seq)

    def facts(self) -> dict[str, Any]:
        """What `list --json`, the Ansible modules and logs report about a version."""
        m = self.manifest
        return {
            "name": m.name,
            "version": self.version_id,
            "size": m.size,
            "sha256": m.sha256,
            "uploaded_at": m.uploaded_at,
            "uploader": m.uploader,
            "mode": f"{m.mode:04o}",
        }


_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "size": (int,),
    "sha256": (str,),
    "object_key": (str,),
    "object_size": (int,),
    "chunk_size": (int,),
    "uploaded_at": (int, float),
    "uploader": (str,),
    "mode": (int,),
    "format": (str,),
    "torrent": (dict, type(None)),
}


def _aead(secret: bytes) -> CbcHmacAead:
    return CbcHmacAead.draft(derive_key(secret, "v3 manifest"))


def _associated_data(key: str) -> bytes:
    return b"distsync v3 manifest\x00" + key.encode("utf-8")


def seal_manifest(secret: bytes, key: str, manifest: Manifest) -> bytes:
    body = json.dumps(asdict(manifest), sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + _aead(secret).seal(body, _associated_data(key))


def open_manifest(secret: bytes, key: str, data: bytes) -> Manifest:
    """Verify and parse the manifest stored at ``key``; IntegrityError if it is not genuine."""
    if not data.startswith(MAGIC):
        raise FormatError(f"{key}: not a distsync manifest")
    try:
        body = _aead(secret).open(data[len(MAGIC) :], _associated_data(key))
    except IntegrityError:
        raise IntegrityError(
            f"{key}: manifest failed authentication (wrong secret, altered, or moved from "
            "another key)"
        ) from None
    try:
        raw = json.loads(body)
    except ValueError:
        raise FormatError(f"{key}: authenticated manifest is not valid JSON") from None
    if not isinstance(raw, dict) or set(raw) != set(_FIELDS):
        raise FormatError(f"{key}: manifest has unexpected fields")
    for name, types in _FIELDS.items():
        if isinstance(raw[name], bool) or not isinstance(raw[name], types):
            raise FormatError(f"{key}: manifest field {name} has the wrong type")
    manifest = Manifest(**raw)
    validate_name(manifest.name, FormatError)
    return manifest
