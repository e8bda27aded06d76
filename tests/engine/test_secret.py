"""SharedSecret: 48 characters of base64url over 32 random bytes and their CRC32."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from distsync.crypto.secret import InvalidSecret, generate_secret, parse_secret


def test_generated_shape() -> None:
    text = generate_secret()
    assert len(text) == 48
    blob = base64.urlsafe_b64decode(text)
    assert struct.unpack(">I", blob[32:])[0] == zlib.crc32(blob[:32])
    assert parse_secret(text) == blob[:32]
    assert generate_secret() != text


def test_known_secret() -> None:
    raw = bytes(range(32))
    text = base64.urlsafe_b64encode(raw + struct.pack(">I", zlib.crc32(raw))).decode()
    assert parse_secret(text) == raw


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s[:-1],
        lambda s: s + "A",
        lambda s: s[:5] + ("B" if s[5] != "B" else "C") + s[6:],
        lambda s: s[:5] + "+" + s[6:],
        lambda s: s[:5] + "é" + s[6:],
        lambda s: "",
    ],
)
def test_rejects(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidSecret):
        parse_secret(mutate(generate_secret()))


def test_early_go_hex_secret() -> None:
    raw = bytes(range(32, 64))
    text = (raw + struct.pack(">I", zlib.crc32(raw))).hex()
    assert parse_secret(text) == raw
    with pytest.raises(InvalidSecret, match="checksum"):
        parse_secret(text[:-2] + ("00" if text[-2:] != "00" else "11"))
