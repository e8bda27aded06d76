"""Signed records (distsync.signed) and Ed25519 keys in configs (distsync.crypto.signing).

The vector is read from docs/FORMAT.md and re-derived here with ``cryptography`` directly, so
the document, an independent reading of it and the code cannot drift apart. The trust rule is
pure: each case feeds it bytes, a key and a trusted set.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from distsync.crypto.signing import InvalidKey, SigningKey, format_key, parse_key
from distsync.errors import FormatError, IntegrityError
from distsync.signed import (
    SIGNED_MAGIC,
    Trust,
    check_signed,
    open_signed,
    sign_sealed,
    signed_message,
)
from hypothesis import given, settings
from hypothesis import strategies as st

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
KEY = "distsync/v3/log/00000000000000000001"
SEALED = b"DSM3" + bytes(range(48))
ALICE = SigningKey.generate()
BOB = SigningKey.generate()


def documented_vector() -> dict[str, str]:
    text = FORMAT_MD.read_text(encoding="utf-8")
    block = text.split("**Signed record vector**", 1)[1].split("```", 2)[1]
    fields: dict[str, str] = {}
    last = ""
    for line in block.splitlines():
        match = re.match(r"(\w+)\s+= (.*)$", line)
        if match:
            last = match[1]
            fields[last] = match[2].strip()
        elif line.strip():
            fields[last] += line.strip()
    return fields


def test_documented_vector() -> None:
    doc = documented_vector()
    seed = bytes.fromhex(doc["seed"])
    # Independently of distsync: the RFC 8032 key and a signature over the documented message.
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public.hex() == doc["public_key"]
    key = doc["key"]
    sealed = bytes.fromhex(doc["sealed"])
    assert sealed == SEALED and key == KEY
    message = (
        b"distsync v3 signed record\x00" + struct.pack(">I", len(key)) + key.encode() + sealed
    )
    assert message.hex() == doc["message"]
    assert private.sign(message).hex() == doc["signature"]
    envelope = b"DSG3" + public + bytes.fromhex(doc["signature"]) + sealed
    assert len(envelope) == 152
    assert hashlib.sha256(envelope).hexdigest() == doc["signed_sha256"]
    # And distsync makes exactly those bytes, and reads them back.
    signing_key = SigningKey.parse(doc["SigningKey"])
    assert signing_key.seed == seed and format_key(public) == doc["signer"]
    assert signed_message(key, sealed) == message
    assert sign_sealed(signing_key, key, sealed) == envelope
    assert check_signed(key, envelope, Trust.of([public]), "manifest") == sealed


# -- the trust decision ---------------------------------------------------------------------


def test_a_trusted_signature_yields_the_sealed_record() -> None:
    signed = sign_sealed(ALICE, KEY, SEALED)
    assert check_signed(KEY, signed, Trust.of([ALICE.public_key]), "manifest") == SEALED
    assert check_signed(KEY, signed, Trust.of([BOB.public_key, ALICE.public_key]), "m") == SEALED


def test_an_unsigned_record_is_rejected_when_signers_are_trusted() -> None:
    with pytest.raises(IntegrityError, match="manifest is not signed"):
        check_signed(KEY, SEALED, Trust.of([ALICE.public_key]), "manifest")


def test_a_record_signed_by_an_untrusted_key_is_rejected_and_the_key_named() -> None:
    signed = sign_sealed(BOB, KEY, SEALED)
    with pytest.raises(IntegrityError) as caught:
        check_signed(KEY, signed, Trust.of([ALICE.public_key]), "manifest")
    assert f"signed by {format_key(BOB.public_key)}" in str(caught.value)
    assert "not one of this config's TrustedSigners" in str(caught.value)


def test_the_signature_covers_the_key() -> None:
    signed = sign_sealed(ALICE, KEY, SEALED)
    other = "distsync/v3/log/00000000000000000002"
    with pytest.raises(IntegrityError, match="does not verify"):
        check_signed(other, signed, Trust.of([ALICE.public_key]), "manifest")
    with pytest.raises(IntegrityError, match="does not verify"):
        open_signed(other, signed, "manifest")  # whoever signed it: it fails


@pytest.mark.parametrize("where", [4, 40, 99, 100, 151])
def test_any_altered_byte_fails(where: int) -> None:
    signed = bytearray(sign_sealed(ALICE, KEY, SEALED))
    signed[where] ^= 0x01
    with pytest.raises(IntegrityError):
        check_signed(KEY, bytes(signed), Trust.of([ALICE.public_key]), "manifest")


def test_a_truncated_signature_is_a_format_error() -> None:
    signed = sign_sealed(ALICE, KEY, SEALED)
    for cut in (4, 36, 99, 100):
        with pytest.raises(FormatError, match="truncated"):
            open_signed(KEY, signed[:cut], "manifest")
        with pytest.raises(FormatError, match="truncated"):
            check_signed(KEY, signed[:cut], Trust.of([ALICE.public_key]), "manifest")


def test_without_signers_unsigned_records_pass_and_bad_signatures_still_fail() -> None:
    """A store set up before signing: today's behaviour, but a signature must still hold."""
    trust = Trust()
    assert not trust.required and trust.accepts(None) and trust.accepts(BOB.public_key)
    assert check_signed(KEY, SEALED, trust, "manifest") == SEALED
    assert check_signed(KEY, sign_sealed(BOB, KEY, SEALED), trust, "manifest") == SEALED
    forged = bytearray(sign_sealed(BOB, KEY, SEALED))
    forged[50] ^= 1
    with pytest.raises(IntegrityError):
        check_signed(KEY, bytes(forged), trust, "manifest")


def test_trust_accepts_only_its_signers() -> None:
    trust = Trust.of([ALICE.public_key])
    assert trust.required
    assert trust.accepts(ALICE.public_key)
    assert not trust.accepts(BOB.public_key) and not trust.accepts(None)


def test_open_signed_reports_the_verified_signer() -> None:
    assert open_signed(KEY, SEALED, "store record").signer is None
    opened = open_signed(KEY, sign_sealed(ALICE, KEY, SEALED), "store record")
    assert opened.signer == ALICE.public_key and opened.sealed == SEALED
    assert SIGNED_MAGIC == b"DSG3"


# -- key text ---------------------------------------------------------------------------------


def test_key_text_round_trips() -> None:
    text = ALICE.text()
    assert text.startswith("ed25519:") and len(text) == len("ed25519:") + 43
    assert "=" not in text
    assert SigningKey.parse(text) == ALICE
    assert parse_key(format_key(ALICE.public_key)) == ALICE.public_key
    assert ALICE.seed.hex() not in repr(ALICE) and text not in repr(ALICE)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "must start with"),
        ("ED25519:" + "A" * 43, "must start with"),
        ("ed25519:" + "A" * 42, "43 characters"),
        ("ed25519:" + "A" * 44, "43 characters"),
        ("ed25519:" + "A" * 42 + "=", "not valid base64url"),
        ("ed25519:" + "A" * 42 + "+", "not valid base64url"),
        ("ed25519:" + "A" * 42 + "B", "not canonical"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_them(text: str, problem: str) -> None:
    with pytest.raises(InvalidKey, match=problem) as caught:
        parse_key(text)
    if len(text) > 8:
        assert text[8:] not in str(caught.value)


@given(st.text(max_size=60))
@settings(max_examples=300)
def test_parse_key_raises_only_invalid_key(body: str) -> None:
    for text in (body, "ed25519:" + body):
        try:
            raw = parse_key(text)
        except InvalidKey:
            continue
        assert len(raw) == 32 and format_key(raw) == text
