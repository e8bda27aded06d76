"""Manifests: the small encrypted record each upload writes into the global log.

A manifest says what an artifact is (name, size, plaintext SHA-256, mode) and where its
ciphertext lives. It is sealed with a key derived for this purpose alone, and its associated
data is its own object key, so a manifest copied or moved to another key — the way to replay
an old artifact as new — fails authentication.

Stored bytes: ``b"DSM3"`` || AEAD_AES_128_CBC_HMAC_SHA_256(JSON), sealed by ``distsync.sealed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from distsync.errors import FormatError, UsageError
from distsync.sealed import RecordKind, open_sealed, seal_record_body

__all__ = ["Manifest", "Version", "open_manifest", "seal_manifest", "validate_name"]

MANIFEST = RecordKind(
    magic=b"DSM3", purpose="v3 manifest", label=b"distsync v3 manifest", noun="manifest"
)
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


def seal_manifest(secret: bytes, key: str, manifest: Manifest) -> bytes:
    return seal_record_body(MANIFEST, secret, key, asdict(manifest))


def open_manifest(secret: bytes, key: str, data: bytes) -> Manifest:
    """Verify and parse the manifest stored at ``key``; IntegrityError if it is not genuine."""
    raw = open_sealed(MANIFEST, secret, key, data)
    if set(raw) != set(_FIELDS):
        raise FormatError(f"{key}: manifest has unexpected fields")
    for name, types in _FIELDS.items():
        if isinstance(raw[name], bool) or not isinstance(raw[name], types):
            raise FormatError(f"{key}: manifest field {name} has the wrong type")
    manifest = Manifest(**raw)
    validate_name(manifest.name, FormatError)
    return manifest
