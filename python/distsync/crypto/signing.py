"""Ed25519 keys for signed uploads, and their text form in configs.

A key is written ``ed25519:`` followed by the base64url (unpadded) of its 32 raw bytes: the
private *seed* for ``SigningKey`` (the uploader's config only), the public key for each entry
of ``TrustedSigners``. Both are 43 characters after the prefix, so the text alone cannot tell
them apart: ``distsync keys new`` prints each as the config line it belongs in.

Parsing is strict (canonical base64url, exactly 32 bytes) and its errors never echo the text,
which may be a private key.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "KEY_PREFIX",
    "PUBLIC_KEY_LEN",
    "SIGNATURE_LEN",
    "InvalidKey",
    "SigningKey",
    "format_key",
    "parse_key",
    "verify",
]

KEY_PREFIX = "ed25519:"
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
_ENCODED_LEN = 43  # base64url of 32 bytes, unpadded
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class InvalidKey(ValueError):
    """The text is not a well-formed key; the message says why (never echoes it)."""


def format_key(raw: bytes) -> str:
    """``ed25519:<base64url, unpadded>`` of 32 raw key bytes (seed or public key)."""
    if len(raw) != PUBLIC_KEY_LEN:
        raise ValueError("an Ed25519 key is 32 bytes")
    return KEY_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def parse_key(text: str) -> bytes:
    """The 32 raw bytes of ``ed25519:<base64url>``; InvalidKey says what is wrong."""
    if not text.startswith(KEY_PREFIX):
        raise InvalidKey(f'must start with "{KEY_PREFIX}" (as `distsync keys new` prints it)')
    body = text[len(KEY_PREFIX) :]
    if len(body) != _ENCODED_LEN:
        raise InvalidKey(
            f"must be {KEY_PREFIX} and {_ENCODED_LEN} characters of base64url, "
            f"got {len(body)} characters"
        )
    if not _BASE64URL.fullmatch(body):
        raise InvalidKey("is not valid base64url (A-Z a-z 0-9 - _, no padding)")
    try:
        raw = base64.urlsafe_b64decode(body + "=")
    except (binascii.Error, ValueError):
        raise InvalidKey("is not valid base64url") from None
    if len(raw) != PUBLIC_KEY_LEN or format_key(raw) != text:
        # The last character's spare bits must be zero: anything else was mistyped.
        raise InvalidKey("is not canonical base64url (mistyped?)")
    return raw


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key: what an uploader signs with. Never logged or shown."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != PUBLIC_KEY_LEN:
            raise ValueError("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        return cls(parse_key(text))

    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public_key(self) -> bytes:
        return self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return self._private().sign(message)

    def text(self) -> str:
        """The ``SigningKey`` value of a config (a secret: for the uploader's config only)."""
        return format_key(self.seed)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
