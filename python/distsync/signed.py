"""Signed records: an uploader's Ed25519 signature over a sealed record and its object key.

Every config holds the SharedSecret, servers' configs included, so a sealed record
(``distsync.sealed``) proves only that whoever wrote it holds the secret. A signature by a key
only uploaders hold is what tells an upload from a forgery by a compromised server::

    signed  = b"DSG3" || public_key (32) || signature (64) || sealed
    message = b"distsync v3 signed record" || 0x00 || uint32(len(key)) || key || sealed

``sealed`` is the record exactly as ``sealed.seal_record_body`` made it (its magic tells its
kind), ``key`` is the UTF-8 object key it is stored at, and ``signature`` is Ed25519 (RFC
8032) by ``public_key`` over ``message``. Covering the key means a validly signed record
copied to another key (an old manifest replayed at a new log number) fails here, before any
decryption. docs/FORMAT.md has the layout and a test vector.

``check_signed`` is the whole trust decision, a pure function of the bytes, their key and the
config's ``Trust``; every door (daemon, ``list``, ``download``, ``upload``, the modules) goes
through it, by way of the catalog and the store record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from distsync.crypto.signing import (
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    SigningKey,
    format_key,
    verify,
)
from distsync.errors import FormatError, IntegrityError

__all__ = [
    "SIGNED_MAGIC",
    "Signed",
    "Trust",
    "check_signed",
    "open_signed",
    "sign_sealed",
    "signed_message",
]

SIGNED_MAGIC = b"DSG3"
_LABEL = b"distsync v3 signed record\x00"
_HEADER_LEN = len(SIGNED_MAGIC) + PUBLIC_KEY_LEN + SIGNATURE_LEN  # 100


@dataclass(frozen=True)
class Trust:
    """Which signers a config trusts: its ``TrustedSigners`` and its own ``SigningKey``.

    With none, signatures are not required (a store set up before signing): what verifies
    with the secret is accepted, signed or not.
    """

    signers: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, keys: Iterable[bytes]) -> Trust:
        return cls(frozenset(keys))

    @property
    def required(self) -> bool:
        return bool(self.signers)

    def accepts(self, signer: bytes | None) -> bool:
        """Whether a record signed by ``signer`` (None: unsigned) may be acted on."""
        return not self.required or signer in self.signers


@dataclass(frozen=True)
class Signed:
    """A stored record taken apart: who signed it (verified), and the sealed record."""

    signer: bytes | None  # None: the record is not signed
    sealed: bytes


def signed_message(key: str, sealed: bytes) -> bytes:
    """What the signature covers: a label, the object key (length first) and the record."""
    encoded = key.encode("utf-8")
    return _LABEL + struct.pack(">I", len(encoded)) + encoded + sealed


def sign_sealed(signing_key: SigningKey, key: str, sealed: bytes) -> bytes:
    """The bytes to store at ``key`` for the sealed record ``sealed``, signed."""
    signature = signing_key.sign(signed_message(key, sealed))
    return SIGNED_MAGIC + signing_key.public_key + signature + sealed


def open_signed(key: str, data: bytes, noun: str) -> Signed:
    """Take a stored record apart; a signature present must verify, whoever made it.

    Unsigned bytes come back whole as ``sealed`` (``signer`` None). IntegrityError when a
    signature is there but does not verify at ``key`` (altered, or copied from another key).
    """
    if not data.startswith(SIGNED_MAGIC):
        return Signed(None, data)
    if len(data) <= _HEADER_LEN:
        raise FormatError(f"{key}: signed {noun} is truncated")
    signer = data[len(SIGNED_MAGIC) : len(SIGNED_MAGIC) + PUBLIC_KEY_LEN]
    signature = data[len(SIGNED_MAGIC) + PUBLIC_KEY_LEN : _HEADER_LEN]
    sealed = data[_HEADER_LEN:]
    if not verify(signer, signature, signed_message(key, sealed)):
        raise IntegrityError(
            f"{key}: the signature of this {noun} does not verify (altered, or copied here "
            "from another key)"
        )
    return Signed(signer, sealed)


def check_signed(key: str, data: bytes, trust: Trust, noun: str) -> bytes:
    """The trust decision for the record stored at ``key``: its sealed bytes if ``trust``
    accepts it, else IntegrityError saying why. Nothing is decrypted here.

    With signers to trust, an unsigned record and one signed by any other key are rejected
    like a tampered one, whatever else about them verifies. The signer is checked before the
    signature, so a forgery by an unknown key costs no verification.
    """
    if trust.required and not data.startswith(SIGNED_MAGIC):
        raise IntegrityError(
            f"{key}: {noun} is not signed, and this config accepts only those signed by its "
            "TrustedSigners"
        )
    if trust.required and len(data) > _HEADER_LEN:
        signer = data[len(SIGNED_MAGIC) : len(SIGNED_MAGIC) + PUBLIC_KEY_LEN]
        if signer not in trust.signers:
            raise IntegrityError(
                f"{key}: {noun} is signed by {format_key(signer)}, which is not one of this "
                "config's TrustedSigners"
            )
    return open_signed(key, data, noun).sealed
