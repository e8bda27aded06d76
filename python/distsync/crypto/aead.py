"""AEAD_AES_128_CBC_HMAC_SHA_256: AES-128-CBC then HMAC-SHA-256 truncated to 128 bits.

Specified in draft-mcgrew-aead-aes-cbc-hmac-sha2 (the same construction as RFC 7518's
A128CBC-HS256)::

    MAC_KEY = K[0:16]   ENC_KEY = K[16:32]          (the draft's order)
    C  = AES-128-CBC(ENC_KEY, IV, PKCS7(P))
    T  = HMAC-SHA-256(MAC_KEY, A || IV || C || uint64_be(8 * len(A)))[0:16]
    output = IV || C || T

codahale/etm, which the Go original used, uses the same construction with the key halves in the
REVERSE order (ENC_KEY = K[0:16], MAC_KEY = K[16:32]); ``CbcHmacAead.etm`` builds that variant.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from distsync.errors import IntegrityError

__all__ = [
    "BLOCK_LEN",
    "IV_LEN",
    "KEY_LEN",
    "MIN_SEALED_LEN",
    "TAG_LEN",
    "CbcHmacAead",
    "sealed_len",
]

KEY_LEN = 32
IV_LEN = 16
BLOCK_LEN = 16
TAG_LEN = 16
MIN_SEALED_LEN = IV_LEN + BLOCK_LEN + TAG_LEN
_BITS = struct.Struct(">Q")
_SLICE = 256 << 10  # seal_into encrypts and MACs in slices this size, while they are in cache


def sealed_len(plaintext_len: int) -> int:
    """Length of ``seal()`` output for a plaintext of ``plaintext_len`` bytes."""
    return IV_LEN + (plaintext_len // BLOCK_LEN + 1) * BLOCK_LEN + TAG_LEN


class CbcHmacAead:
    """One key, sealing and opening whole messages. Safe to share between threads."""

    __slots__ = ("_enc_key", "_mac_key")

    def __init__(self, *, enc_key: bytes, mac_key: bytes) -> None:
        if len(enc_key) != 16 or len(mac_key) != 16:
            raise ValueError("AEAD_AES_128_CBC_HMAC_SHA_256 takes 16-byte ENC_KEY and MAC_KEY")
        self._enc_key = bytes(enc_key)
        self._mac_key = bytes(mac_key)

    @classmethod
    def draft(cls, key: bytes) -> CbcHmacAead:
        """The draft-mcgrew / RFC 7518 key order: MAC_KEY = K[0:16], ENC_KEY = K[16:32]."""
        _check_key(key)
        return cls(mac_key=key[:16], enc_key=key[16:])

    @classmethod
    def etm(cls, key: bytes) -> CbcHmacAead:
        """codahale/etm's key order (Go distsync01): ENC_KEY = K[0:16], MAC_KEY = K[16:32]."""
        _check_key(key)
        return cls(enc_key=key[:16], mac_key=key[16:])

    def _tag(self, associated_data: bytes, iv_and_ciphertext: bytes | memoryview) -> bytes:
        mac = hmac.new(self._mac_key, associated_data, hashlib.sha256)
        mac.update(iv_and_ciphertext)  # releases the GIL: chunks are verified in parallel
        mac.update(_BITS.pack(8 * len(associated_data)))
        return mac.digest()[:TAG_LEN]

    def seal(
        self,
        plaintext: bytes | memoryview,
        associated_data: bytes = b"",
        iv: bytes | None = None,
    ) -> bytes:
        """Return ``IV || C || T``. ``iv`` is random unless given (only vectors give it)."""
        out = bytearray(sealed_len(len(plaintext)))
        self.seal_into(plaintext, associated_data, os.urandom(IV_LEN) if iv is None else iv, out)
        return bytes(out)

    def seal_into(
        self,
        plaintext: bytes | memoryview,
        associated_data: bytes,
        iv: bytes,
        out: bytearray | memoryview,
    ) -> int:
        """Write ``IV || C || T`` to the start of ``out``; return its length.

        For hot loops: reusing ``out`` avoids allocating (and page-faulting) a fresh buffer
        per message, which costs more than the AES itself. ``out`` needs
        ``sealed_len(len(plaintext))`` bytes.
        """
        if len(iv) != IV_LEN:
            raise ValueError("IV must be 16 bytes")
        size = sealed_len(len(plaintext))
        if len(out) < size:
            raise ValueError(f"output buffer needs {size} bytes")
        view = memoryview(out)
        view[:IV_LEN] = iv
        source = memoryview(plaintext)
        full = len(source) - len(source) % BLOCK_LEN
        encryptor = Cipher(algorithms.AES(self._enc_key), modes.CBC(iv)).encryptor()
        mac = hmac.new(self._mac_key, associated_data, hashlib.sha256)
        mac.update(iv)
        # AES and HMAC alternate on slices so each slice is MACed while it is still in the
        # core's cache (about 3 % less CPU than two whole passes over a 1 MiB chunk). Both
        # release the GIL (cryptography >= 50, hashlib), so threads seal chunks in parallel.
        pos = IV_LEN
        for start in range(0, full, _SLICE):
            piece = source[start : min(start + _SLICE, full)]
            # update_into wants one block of spare room: the pad block and tag provide it.
            encryptor.update_into(piece, view[pos:])
            mac.update(view[pos : pos + len(piece)])
            pos += len(piece)
        pad = BLOCK_LEN - len(source) % BLOCK_LEN
        view[pos : pos + BLOCK_LEN] = encryptor.update(bytes(source[full:]) + bytes([pad]) * pad)
        encryptor.finalize()
        mac.update(view[pos : pos + BLOCK_LEN])
        mac.update(_BITS.pack(8 * len(associated_data)))
        view[pos + BLOCK_LEN : size] = mac.digest()[:TAG_LEN]
        return size

    def open(self, sealed: bytes | memoryview, associated_data: bytes = b"") -> bytes:
        """Verify and decrypt ``IV || C || T``; raise IntegrityError on any mismatch."""
        out = bytearray(max(len(sealed), MIN_SEALED_LEN))
        n = self.open_into(sealed, associated_data, out)
        del out[n:]
        return bytes(out)

    def open_into(
        self,
        sealed: bytes | memoryview,
        associated_data: bytes,
        out: bytearray | memoryview,
    ) -> int:
        """Verify and decrypt into the start of ``out``; return the plaintext length.

        ``out`` needs ``len(sealed)`` bytes. Nothing is decrypted unless the tag verifies.
        """
        view = memoryview(sealed)
        if len(view) < MIN_SEALED_LEN or (len(view) - IV_LEN - TAG_LEN) % BLOCK_LEN:
            raise IntegrityError("ciphertext has an impossible length")
        if len(out) < len(view):
            raise ValueError(f"output buffer needs {len(view)} bytes")
        body_end = len(view) - TAG_LEN
        if not hmac.compare_digest(self._tag(associated_data, view[:body_end]), view[body_end:]):
            raise IntegrityError("authentication failed (wrong secret, or the data was altered)")
        decryptor = Cipher(algorithms.AES(self._enc_key), modes.CBC(view[:IV_LEN])).decryptor()
        n = body_end - IV_LEN
        # update_into wants one spare block of room: decrypt the last block separately so
        # that ``out`` need not be larger than the ciphertext.
        dst = memoryview(out)
        head = n - BLOCK_LEN
        if head:
            decryptor.update_into(view[IV_LEN : IV_LEN + head], dst[:n])
        dst[head:n] = decryptor.update(view[IV_LEN + head : body_end])
        decryptor.finalize()
        pad = dst[n - 1]
        if not 1 <= pad <= BLOCK_LEN or dst[n - pad : n] != bytes([pad]) * pad:
            # Only reachable with a valid tag, i.e. by a writer holding the key.
            raise IntegrityError("authenticated ciphertext has invalid padding")
        return n - pad


def _check_key(key: bytes) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"AEAD_AES_128_CBC_HMAC_SHA_256 takes a {KEY_LEN}-byte key")
