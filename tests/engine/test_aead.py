"""AEAD_AES_128_CBC_HMAC_SHA_256 against its published vectors, plus tamper rejection."""

from __future__ import annotations

import os

import pytest
from distsync.crypto.aead import MIN_SEALED_LEN, CbcHmacAead, sealed_len
from distsync.errors import IntegrityError

# draft-mcgrew-aead-aes-cbc-hmac-sha2-05 §5.1 (AEAD_AES_128_CBC_HMAC_SHA_256) and
# RFC 7518 Appendix B.1 (A128CBC-HS256) use the same inputs; they are written out separately,
# in each document's own presentation, so that a transcription slip in one is caught.
DRAFT_K = bytes.fromhex(
    "000102030405060708090a0b0c0d0e0f"  # MAC_KEY
    "101112131415161718191a1b1c1d1e1f"  # ENC_KEY
)
DRAFT_P = bytes.fromhex(
    "41206369706865722073797374656d20"
    "6d757374206e6f742062652072657175"
    "6972656420746f206265207365637265"
    "742c20616e64206974206d7573742062"
    "652061626c6520746f2066616c6c2069"
    "6e746f207468652068616e6473206f66"
    "2074686520656e656d7920776974686f"
    "757420696e636f6e76656e69656e6365"
)
DRAFT_IV = bytes.fromhex("1af38c2dc2b96ffdd86694092341bc04")
DRAFT_A = bytes.fromhex(
    "546865207365636f6e64207072696e63"
    "69706c65206f66204175677573746520"
    "4b6572636b686f666673"
)
DRAFT_C = bytes.fromhex(
    "1af38c2dc2b96ffdd86694092341bc04"
    "c80edfa32ddf39d5ef00c0b468834279"
    "a2e46a1b8049f792f76bfe54b903a9c9"
    "a94ac9b47ad2655c5f10f9aef71427e2"
    "fc6f9b3f399a221489f16362c7032336"
    "09d45ac69864e3321cf82935ac4096c8"
    "6e133314c54019e8ca7980dfa4b9cf1b"
    "384c486f3a54c51078158ee5d79de59f"
    "bd34d848b3d69550a67646344427ade5"
    "4b8851ffb598f7f80074b9473c82e2db"
    "652c3fa36b0a7c5b3219fab3a30bc1c4"
)

RFC7518_K = bytes(range(32))
RFC7518_P = (
    b"A cipher system must not be required to be secret, and it must be able to fall into "
    b"the hands of the enemy without inconvenience"
)
RFC7518_IV = bytes.fromhex("1af38c2dc2b96ffdd86694092341bc04")
RFC7518_A = b"The second principle of Auguste Kerckhoffs"
RFC7518_E = bytes.fromhex(
    "c80edfa32ddf39d5ef00c0b468834279a2e46a1b8049f792f76bfe54b903a9c9"
    "a94ac9b47ad2655c5f10f9aef71427e2fc6f9b3f399a221489f16362c7032336"
    "09d45ac69864e3321cf82935ac4096c86e133314c54019e8ca7980dfa4b9cf1b"
    "384c486f3a54c51078158ee5d79de59fbd34d848b3d69550a67646344427ade5"
    "4b8851ffb598f7f80074b9473c82e2db"
)
RFC7518_T = bytes.fromhex("652c3fa36b0a7c5b3219fab3a30bc1c4")


def test_draft_mcgrew_5_1_vector() -> None:
    aead = CbcHmacAead.draft(DRAFT_K)
    assert aead.seal(DRAFT_P, DRAFT_A, iv=DRAFT_IV) == DRAFT_C
    assert aead.open(DRAFT_C, DRAFT_A) == DRAFT_P


def test_rfc7518_b1_vector() -> None:
    aead = CbcHmacAead.draft(RFC7518_K)
    assert aead.seal(RFC7518_P, RFC7518_A, iv=RFC7518_IV) == RFC7518_IV + RFC7518_E + RFC7518_T
    assert aead.open(RFC7518_IV + RFC7518_E + RFC7518_T, RFC7518_A) == RFC7518_P


def test_etm_is_the_draft_with_key_halves_swapped() -> None:
    swapped = DRAFT_K[16:] + DRAFT_K[:16]
    assert CbcHmacAead.etm(swapped).seal(DRAFT_P, DRAFT_A, iv=DRAFT_IV) == DRAFT_C
    with pytest.raises(IntegrityError):
        CbcHmacAead.etm(DRAFT_K).open(DRAFT_C, DRAFT_A)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 1000, 65536])
def test_round_trip_and_lengths(size: int) -> None:
    aead = CbcHmacAead.draft(os.urandom(32))
    plaintext = os.urandom(size)
    sealed = aead.seal(plaintext, b"ad")
    assert len(sealed) == sealed_len(size)
    assert aead.open(sealed, b"ad") == plaintext
    assert aead.open(memoryview(sealed), b"ad") == plaintext


def test_seal_into_and_open_into_reuse_buffers() -> None:
    aead = CbcHmacAead.draft(DRAFT_K)
    out = bytearray(b"\xee" * 400)
    n = aead.seal_into(DRAFT_P, DRAFT_A, DRAFT_IV, out)
    assert bytes(out[:n]) == DRAFT_C
    assert out[n:] == b"\xee" * (400 - n)
    plain = bytearray(len(DRAFT_C))
    m = aead.open_into(memoryview(out)[:n], DRAFT_A, plain)
    assert bytes(plain[:m]) == DRAFT_P
    with pytest.raises(ValueError):
        aead.seal_into(DRAFT_P, DRAFT_A, DRAFT_IV, bytearray(n - 1))


@pytest.mark.parametrize("position", range(len(DRAFT_C)))
def test_every_byte_flip_is_rejected(position: int) -> None:
    # Covers the IV (0..15), the ciphertext and the tag (last 16 bytes).
    damaged = bytearray(DRAFT_C)
    damaged[position] ^= 0x01
    with pytest.raises(IntegrityError):
        CbcHmacAead.draft(DRAFT_K).open(bytes(damaged), DRAFT_A)


@pytest.mark.parametrize(
    "ad", [b"", DRAFT_A[:-1], DRAFT_A + b"\x00", b"the second principle of Auguste Kerckhoffs"]
)
def test_wrong_associated_data_is_rejected(ad: bytes) -> None:
    with pytest.raises(IntegrityError):
        CbcHmacAead.draft(DRAFT_K).open(DRAFT_C, ad)


@pytest.mark.parametrize("length", [0, 1, MIN_SEALED_LEN - 1, MIN_SEALED_LEN + 1, 63])
def test_impossible_lengths_are_rejected(length: int) -> None:
    with pytest.raises(IntegrityError, match="impossible length"):
        CbcHmacAead.draft(DRAFT_K).open(DRAFT_C[:length], DRAFT_A)


def test_truncated_or_extended_ciphertext_is_rejected() -> None:
    aead = CbcHmacAead.draft(DRAFT_K)
    for sealed in (DRAFT_C[:-16], DRAFT_C[16:], DRAFT_C + bytes(16), DRAFT_C[:16] + DRAFT_C[32:]):
        with pytest.raises(IntegrityError):
            aead.open(sealed, DRAFT_A)


def test_bad_padding_under_a_valid_tag_is_an_integrity_error() -> None:
    # Only a key holder can produce this: encrypt unpadded bytes and MAC them properly.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    aead = CbcHmacAead.draft(DRAFT_K)
    body = Cipher(algorithms.AES(DRAFT_K[16:]), modes.CBC(DRAFT_IV)).encryptor().update(
        bytes(15) + b"\x11"
    )
    sealed = DRAFT_IV + body
    sealed += aead._tag(b"", sealed)
    with pytest.raises(IntegrityError, match="padding"):
        aead.open(sealed, b"")


def test_keys_of_the_wrong_length_are_refused() -> None:
    for bad in (b"", bytes(16), bytes(31), bytes(33)):
        with pytest.raises(ValueError):
            CbcHmacAead.draft(bad)
        with pytest.raises(ValueError):
            CbcHmacAead.etm(bad)
