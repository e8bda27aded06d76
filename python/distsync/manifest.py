"""Manifests: the small encrypted record each upload writes into the global log.

A manifest says what an artifact is (name, size, plaintext SHA-256, mode) and where its
ciphertext lives. It is sealed with a key derived for this purpose alone, and its associated
data is its own object key, so a manifest copied or moved to another key — the way to replay
an old artifact as new — fails authentication.

Stored bytes: ``b"DSM3"`` || AEAD_AES_128_CBC_HMAC_SHA_256(JSON), sealed by ``distsync.sealed``;
an uploader with a ``SigningKey`` wraps that in its signature over the sealed bytes and the
key (``distsync.signed``), and a reader that trusts signers accepts nothing else.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from distsync import logorder
from distsync.crypto import stream
from distsync.errors import FormatError, UsageError
from distsync.fsutil import PART_SUFFIX
from distsync.layout import SEQ_DIGITS
from distsync.rollout.plan import MAX_GROUPS, Rollout
from distsync.sealed import RecordKind, open_sealed, seal_record_body
from distsync.signed import Trust, check_signed, sign_sealed

if TYPE_CHECKING:
    from distsync.crypto.signing import SigningKey

__all__ = [
    "MAX_NAME_BYTES",
    "Manifest",
    "Version",
    "check_manifest",
    "open_manifest",
    "seal_manifest",
    "validate_name",
]

MANIFEST = RecordKind(
    magic=b"DSM3", purpose="v3 manifest", label=b"distsync v3 manifest", noun="manifest"
)
# A download accumulates in ".NAME.vSEQ.distsync-part" beside its destination, and that name
# must fit the file system's 255 bytes with a 20-digit sequence number.
_NAME_MAX = 255
MAX_NAME_BYTES = _NAME_MAX - len(".") - len(".v") - SEQ_DIGITS - len(PART_SUFFIX)
_MAX_UPLOADER_BYTES = 255
_MAX_SIZE = 1 << 48  # 256 TiB, far above any object store's largest object
# time.gmtime and strftime take any time up to the end of year 9999.
_MAX_TIME = 253402300799.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The leaf of an object key: upload.py writes uuid4 hex; leave room for other random ids.
_OBJECT_LEAF = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _control_character(text: str) -> bool:
    """C0, DEL and C1 controls: a terminal or a log line would act on them."""
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text)


def _utf8_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: from JSON, or a non-UTF-8 file name
        return "is not valid UTF-8"
    return None


def _finite_between(value: float, low: float, high: float) -> bool:
    # An int from JSON may be too large for a float (math.isfinite would raise).
    return (isinstance(value, int) or math.isfinite(value)) and low <= value <= high


def validate_name(name: str, error: type[Exception] = UsageError) -> str:
    """An artifact name is a plain file name: it becomes a path under OutputDir."""
    problem = _utf8_problem(name)
    if problem is None and _control_character(name):
        problem = "holds a control character"
    if problem is None and len(name.encode("utf-8")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    if problem is None and (not name or name.startswith(".") or any(ch in name for ch in "/\\")):
        problem = "use a plain file name not starting with '.'"
    if problem is not None:
        raise error(f"invalid artifact name {name!r}: {problem}")
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
    # Targeting and staged rollout (distsync.rollout): the groups an upload is for (None:
    # every server) and its waves. Stored only when set, so other manifests keep the
    # layout older daemons read; an older daemon refuses a manifest that has them (unknown
    # fields), which fails closed: it does not install what may not be meant for it.
    to: tuple[str, ...] | None = None
    rollout: dict[str, Any] | None = None
    # SHA-256 of the object's header and chunk tags (stream.TagsDigest). Written by signed
    # uploads only: every daemon that reads a signed manifest knows the field, while an
    # unsigned one may still be read by 0.1.0 daemons, which refuse fields they do not know.
    tags_sha256: str | None = None

    def staged(self) -> Rollout | None:
        return None if self.rollout is None else Rollout.from_manifest(self.rollout)


@dataclass(frozen=True)
class Version:
    """A manifest at its place in the log: ``seq`` orders versions, whatever the clocks say.

    ``seq`` is the entry's position (``distsync.logorder``): its sequence number on the atomic
    log layout, ``(seq, tag)`` folded into one integer on the tagged one."""

    seq: int
    key: str
    manifest: Manifest

    @property
    def version_id(self) -> str:
        return logorder.version_id(self.seq)

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
# Fields a manifest holds only when they are set (see Manifest).
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "to": (list,),
    "rollout": (dict,),
    "tags_sha256": (str,),
}


def check_manifest(manifest: Manifest, objects_prefix: str) -> None:
    """Range-check every field before anything uses it; FormatError names the first bad one.

    An authenticated manifest proves who wrote it, not that it is sane: an uploader holding
    the secret (or a bug) must not be able to make a daemon divide by zero, read outside the
    objects prefix, or write a path the file system refuses.
    """
    m = manifest
    validate_name(m.name, FormatError)
    problems = {
        "size": not 0 <= m.size <= _MAX_SIZE,
        "sha256": not _SHA256.fullmatch(m.sha256),
        "tags_sha256": m.tags_sha256 is not None and not _SHA256.fullmatch(m.tags_sha256),
        "object_key": not (
            m.object_key.startswith(objects_prefix)
            and _OBJECT_LEAF.fullmatch(m.object_key[len(objects_prefix) :])
        ),
        "chunk_size": not stream.MIN_CHUNK_SIZE <= m.chunk_size <= stream.MAX_CHUNK_SIZE
        or m.chunk_size % 16 != 0,
        "uploaded_at": not _finite_between(m.uploaded_at, 0, _MAX_TIME),
        "uploader": _utf8_problem(m.uploader) is not None
        or _control_character(m.uploader)
        or len(m.uploader.encode("utf-8", "replace")) > _MAX_UPLOADER_BYTES,
        "mode": not 0 <= m.mode <= 0o7777,
        "format": m.format != "v3",
        "to": m.to is not None and not _groups_ok(m.to),
        "rollout": m.rollout is not None and not _rollout_ok(m.rollout),
    }
    bad = [name for name, wrong in problems.items() if wrong]
    if bad:
        raise FormatError(f"manifest field {bad[0]} is out of range")
    if m.object_size != stream.ciphertext_size(m.size, m.chunk_size):
        raise FormatError("manifest field object_size does not match size and chunk_size")


def _groups_ok(groups: tuple[str, ...]) -> bool:
    return 0 < len(groups) <= MAX_GROUPS and all(
        isinstance(g, str) and 0 < len(g) <= 255 and not _control_character(g) for g in groups
    )


def _rollout_ok(raw: dict[str, Any]) -> bool:
    try:
        Rollout.from_manifest(raw)
    except (ValueError, TypeError):
        return False
    return True


def seal_manifest(
    secret: bytes, key: str, manifest: Manifest, signing_key: SigningKey | None = None
) -> bytes:
    """The bytes to store at ``key``: sealed, and signed when there is a ``signing_key``."""
    body = asdict(manifest)
    for name in _OPTIONAL:
        if body[name] is None:
            del body[name]
        elif name == "to":
            body[name] = list(body[name])
    sealed = seal_record_body(MANIFEST, secret, key, body)
    return sealed if signing_key is None else sign_sealed(signing_key, key, sealed)


def open_manifest(
    secret: bytes, key: str, data: bytes, *, objects_prefix: str, trust: Trust
) -> Manifest:
    """Verify, parse and range-check the manifest stored at ``key``.

    IntegrityError if it is not genuine, or not signed by a signer ``trust`` names (when it
    names any); FormatError (a kind of IntegrityError) if it is genuine but malformed or out
    of range. Its object must live under ``objects_prefix``.
    """
    raw = open_sealed(MANIFEST, secret, key, check_signed(key, data, trust, MANIFEST.noun))
    if not set(_FIELDS) <= set(raw) <= set(_FIELDS) | set(_OPTIONAL):
        raise FormatError(f"{key}: manifest has unexpected fields")
    for name, types in (*_FIELDS.items(), *_OPTIONAL.items()):
        if name in raw and (isinstance(raw[name], bool) or not isinstance(raw[name], types)):
            raise FormatError(f"{key}: manifest field {name} has the wrong type")
    if "to" in raw:
        if not all(isinstance(group, str) for group in raw["to"]):
            raise FormatError(f"{key}: manifest field to has the wrong type")
        raw["to"] = tuple(raw["to"])
    manifest = Manifest(**raw)
    try:
        check_manifest(manifest, objects_prefix)
    except FormatError as exc:
        raise FormatError(f"{key}: {exc}") from None
    return manifest
