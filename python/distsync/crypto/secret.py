"""The SharedSecret: ``base64url(32 random bytes || CRC32-IEEE(those bytes) big-endian)``.

48 characters, exactly as the Go original generates it; the CRC catches a secret that was
truncated or mistyped when it was copied between machines. The earliest Go releases wrote the
same 36 bytes as 72 hex characters; those still load.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import zlib

__all__ = ["SECRET_LEN", "InvalidSecret", "generate_secret", "parse_secret"]

SECRET_LEN = 32
_ENCODED_LEN = 48
_LEGACY_HEX_LEN = 72


class InvalidSecret(ValueError):
    """The text is not a well-formed SharedSecret; the message says why (never echoes it)."""


def generate_secret() -> str:
    raw = os.urandom(SECRET_LEN)
    return _encode(raw)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw + struct.pack(">I", zlib.crc32(raw))).decode("ascii")


def parse_secret(text: str) -> bytes:
    """Return the 32 secret bytes, or raise InvalidSecret."""
    text = text.strip()
    if len(text) == _LEGACY_HEX_LEN:
        return _parse_hex(text)
    if len(text) != _ENCODED_LEN:
        raise InvalidSecret(f"must be {_ENCODED_LEN} characters of base64url, got {len(text)}")
    try:
        blob = base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidSecret("is not valid base64url") from None
    if len(blob) != SECRET_LEN + 4:
        raise InvalidSecret("is not valid base64url")
    if _encode(blob[:SECRET_LEN]) != text:
        # Catches non-alphabet characters that the decoder silently skipped.
        if zlib.crc32(blob[:SECRET_LEN]) != struct.unpack(">I", blob[SECRET_LEN:])[0]:
            raise InvalidSecret("checksum mismatch (the secret was truncated or mistyped)")
        raise InvalidSecret("is not valid base64url")
    return blob[:SECRET_LEN]


def _parse_hex(text: str) -> bytes:
    try:
        blob = bytes.fromhex(text)
    except ValueError:
        raise InvalidSecret("is not valid base64url or hex") from None
    if zlib.crc32(blob[:SECRET_LEN]) != struct.unpack(">I", blob[SECRET_LEN:])[0]:
        raise InvalidSecret("checksum mismatch (the secret was truncated or mistyped)")
    return blob[:SECRET_LEN]
