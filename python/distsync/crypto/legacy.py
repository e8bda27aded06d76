"""Legacy format ``distsync01``: read what the Go distsync wrote; write it only on request.

Object body (all integers big-endian)::

    offset   size   field
    0        10     magic  b"distsync01"
    10       4      L0     uint32, length of frame 0          \\
    14       L0     frame0 etm_seal(IV0, piece0, ad=b"")       | repeated, one per piece
    ...                                                        /
    n        4      0      uint32 zero: end of frames
    n+4      32     HMAC-SHA256(secret, bytes[0 : n+4])       covers magic, lengths, frames, zero

    etm_seal(IV, P, A) = IV || C || T             (codahale/etm AEAD_AES_128_CBC_HMAC_SHA_256)
        ENC_KEY = secret[0:16], MAC_KEY = secret[16:32]     (the REVERSE of the draft's order)
        C = AES-128-CBC(ENC_KEY, IV, PKCS7(P))
        T = HMAC-SHA256(MAC_KEY, A || IV || C || uint64_be(8 * len(A)))[0:16]

A piece is at most 1,000,000 plaintext bytes (the Go writer read a 1,000,000-byte buffer with
one ``Read`` call, so pieces from a pipe can be shorter); a frame is therefore 48 to
1,000,032 bytes, always 32 + a multiple of 16. The Go reader accepted ``L`` up to 10,000,000.

Release 0.1.0 also stored each file under an encrypted name::

    key = base64url_padded(b"d0" || etm_seal(IV, utf8(name), ad=b""))

The 32 secret bytes are used directly as both the etm key and the outer HMAC key, as the Go
version did; new formats must not do this (see keys.derive_key). docs/FORMAT-distsync01.md has
test vectors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Callable
from typing import BinaryIO

from distsync.crypto.aead import BLOCK_LEN, IV_LEN, MIN_SEALED_LEN, TAG_LEN, CbcHmacAead
from distsync.errors import FormatError, IntegrityError

__all__ = [
    "LEGACY_CHUNK_SIZE",
    "LEGACY_MAGIC",
    "LEGACY_MAX_FRAME",
    "decode_legacy",
    "decrypt_legacy_name",
    "encode_legacy",
    "encrypt_legacy_name",
    "is_legacy",
    "is_legacy_encrypted_name",
]

LEGACY_MAGIC = b"distsync01"
LEGACY_CHUNK_SIZE = 1_000_000
LEGACY_MAX_FRAME = 10_000_000

_LEN = struct.Struct(">I")
_MAC_LEN = 32
_NAME_PREFIX = b"d0"
_NAME_KEY = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _new_iv() -> bytes:
    # A module-level hook so that tests can make vectors with fixed IVs.
    return os.urandom(IV_LEN)


def is_legacy(prefix: bytes) -> bool:
    """True when ``prefix`` (the first bytes of an object) starts with the distsync01 magic."""
    return bytes(prefix[: len(LEGACY_MAGIC)]) == LEGACY_MAGIC


def encode_legacy(
    secret: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Encrypt ``src`` into ``dst`` as distsync01; return the ciphertext bytes written.

    ``progress`` is called with each piece's plaintext byte count. ``secret`` is the 32 raw
    secret bytes (ValueError otherwise).
    """
    aead = CbcHmacAead.etm(secret)
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    written = 0

    def emit(data: bytes) -> None:
        nonlocal written
        dst.write(data)
        mac.update(data)
        written += len(data)

    emit(LEGACY_MAGIC)
    while True:
        piece = _read_exactly(src, LEGACY_CHUNK_SIZE)
        if not piece:
            break
        frame = aead.seal(piece, b"", iv=_new_iv())
        emit(_LEN.pack(len(frame)))
        emit(frame)
        if progress is not None:
            progress(len(piece))
        if len(piece) < LEGACY_CHUNK_SIZE:
            break  # _read_exactly only comes up short at end of input
    emit(_LEN.pack(0))
    trailer = mac.digest()
    dst.write(trailer)
    return written + len(trailer)


def decode_legacy(
    secret: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Verify and decrypt a distsync01 object from ``src`` into ``dst``; return plaintext bytes.

    Each frame is authenticated before its plaintext is written, but frames dropped,
    duplicated or reordered are only caught by the whole-object HMAC at the very end. So
    ``dst`` receives plaintext as it goes and callers MUST NOT use it (place, run, or hash it
    as final) before this returns: write to a temporary file and discard it on any error.

    Raises FormatError (bad magic, impossible frame length) or IntegrityError (truncation,
    failed authentication, trailing bytes); I/O errors of ``src``/``dst`` pass through.
    ``src`` is read sequentially, never sought, and memory stays within about one frame.
    """
    aead = CbcHmacAead.etm(secret)
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    magic = _read_exactly(src, len(LEGACY_MAGIC))
    if magic != LEGACY_MAGIC:
        raise FormatError("not a distsync01 object (bad magic bytes)")
    mac.update(magic)
    total = 0
    index = 0
    while True:
        raw_len = _read_exactly(src, _LEN.size)
        if len(raw_len) != _LEN.size:
            raise IntegrityError(f"distsync01 object is truncated (ends before frame {index})")
        mac.update(raw_len)
        (length,) = _LEN.unpack(raw_len)
        if length == 0:
            break
        if not _frame_len_ok(length):
            raise FormatError(f"distsync01 frame {index} has an impossible length ({length})")
        frame = _read_exactly(src, length)
        if len(frame) != length:
            raise IntegrityError(f"distsync01 object is truncated (inside frame {index})")
        mac.update(frame)
        try:
            plaintext = aead.open(frame, b"")
        except IntegrityError:
            raise IntegrityError(
                f"distsync01 frame {index} failed authentication "
                "(wrong secret, or the object was altered)"
            ) from None
        dst.write(plaintext)
        total += len(plaintext)
        if progress is not None:
            progress(len(plaintext))
        index += 1
    tag = _read_exactly(src, _MAC_LEN)
    if len(tag) != _MAC_LEN:
        raise IntegrityError("distsync01 object is truncated (whole-object HMAC missing)")
    if not hmac.compare_digest(tag, mac.digest()):
        raise IntegrityError(
            "distsync01 whole-object HMAC mismatch "
            "(frames dropped, duplicated or reordered, or the object was altered)"
        )
    # Go ignored anything after the HMAC; nothing legitimate is ever there, so refuse it.
    if src.read(1):
        raise IntegrityError("distsync01 object has unexpected bytes after its HMAC")
    return total


def encrypt_legacy_name(secret: bytes, name: str) -> str:
    """Release 0.1.0's object key for ``name``: base64url(b"d0" || etm_seal(name)), padded.

    Names that are not valid Unicode are encoded as os.fsencode would (surrogateescape).
    """
    try:
        clear = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ValueError("name cannot be encoded as UTF-8") from None
    sealed = CbcHmacAead.etm(secret).seal(clear, b"", iv=_new_iv())
    return base64.urlsafe_b64encode(_NAME_PREFIX + sealed).decode("ascii")


def decrypt_legacy_name(secret: bytes, key: str) -> str:
    """Recover the name hidden in a 0.1.0 encrypted object key.

    FormatError if ``key`` does not have that shape, IntegrityError if it fails
    authentication (a different secret, an altered key, or a plain name that happens to look
    like one: callers listing a bucket can fall back to treating the key as a plain name).
    """
    body = _name_body(key)
    if body is None:
        raise FormatError("object key is not a distsync 0.1.0 encrypted name")
    try:
        clear = CbcHmacAead.etm(secret).open(body, b"")
    except IntegrityError:
        raise IntegrityError(
            "encrypted object name failed authentication (wrong secret, or the key was altered)"
        ) from None
    # The Go writer took names from the file system, which need not be UTF-8.
    return clear.decode("utf-8", "surrogateescape")


def is_legacy_encrypted_name(key: str) -> bool:
    """True when ``key`` has the shape of a 0.1.0 encrypted name (checked without the secret)."""
    return _name_body(key) is not None


def _name_body(key: str) -> bytes | None:
    """The sealed bytes inside a well-formed encrypted name, else None."""
    if not isinstance(key, str) or len(key) % 4 or not _NAME_KEY.fullmatch(key):
        return None
    try:
        raw = base64.urlsafe_b64decode(key)
    except (binascii.Error, ValueError):
        return None
    # Only the canonical encoding counts, so one name never has two valid keys.
    if base64.urlsafe_b64encode(raw).decode("ascii") != key:
        return None
    if not raw.startswith(_NAME_PREFIX) or not _sealed_len_ok(len(raw) - len(_NAME_PREFIX)):
        return None
    return raw[len(_NAME_PREFIX) :]


def _sealed_len_ok(length: int) -> bool:
    return length >= MIN_SEALED_LEN and (length - IV_LEN - TAG_LEN) % BLOCK_LEN == 0


def _frame_len_ok(length: int) -> bool:
    return length <= LEGACY_MAX_FRAME and _sealed_len_ok(length)


def _read_exactly(src: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at end of input (pipes and sockets return short reads)."""
    first = src.read(size)
    if not first or len(first) == size:
        return first or b""
    buf = bytearray(first)
    while len(buf) < size:
        more = src.read(size - len(buf))
        if not more:
            break
        buf += more
    return bytes(buf)
