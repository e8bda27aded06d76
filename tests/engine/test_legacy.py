"""distsync01, the Go legacy format: vectors, an independent parser, tampering, fuzzing.

The reference helpers below (``ref_*``) re-implement the format from docs/FORMAT-distsync01.md
with ``struct``, ``hmac`` and ``cryptography`` directly, and are themselves anchored to the
codahale/etm vector, so these tests never just compare our code with itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import random
import struct
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from distsync.crypto import legacy
from distsync.crypto.aead import CbcHmacAead
from distsync.errors import FormatError, IntegrityError
from hypothesis import assume, given, settings
from hypothesis import strategies as st

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))

# --- vectors (also in docs/FORMAT-distsync01.md); cross-checked with the openssl CLI ----------

VECTOR_PLAINTEXT = b"distsync01 test vector\n"
VECTOR_IV = bytes(range(0x40, 0x50))
VECTOR_OBJECT = bytes.fromhex(
    "6469737473796e633031"  # "distsync01"
    "00000040"  # L = 64
    "404142434445464748494a4b4c4d4e4f"  # IV
    "a6ce3edbe2d86387ce956a7deb4f3136"  # C
    "5c41bc59e6a3ff217205181ad096f2e1"
    "4ffee59d022ffd12977fce4c841df6e9"  # T
    "00000000"  # end of frames
    "ebd0f9288269146d53700ef43488f1af"  # HMAC-SHA256(secret, all of the above)
    "506093c7594e3e2c8ecd26ac789ac251"
)
EMPTY_OBJECT = bytes.fromhex(
    "6469737473796e633031"  # "distsync01"
    "00000000"  # end of frames: there are none
    "912aa1f9449b83c6bcbbca27436731d139b582c89913a19451bdda210a8b9c6f"  # HMAC
)
NAME_IV = bytes(range(0x60, 0x70))
NAME_VECTORS = {
    "app.tgz": "ZDBgYWJjZGVmZ2hpamtsbW5viiAhsvsHRznMnFlQdZCAfoLbo42oSJQuDzFouhpPjd4=",
    "app-1.2.3.tar.gz": (
        "ZDBgYWJjZGVmZ2hpamtsbW5vWYb2qDI_cufwx93jsWQS0lsnV7P0pBBliBx--Rfi7JnQgwtkG4pEIKXcFMhBezWF"
    ),
}

# codahale/etm etm_test.go TestAEAD_AES_128_CBC_HMAC_SHA_256: the draft-mcgrew 5.1 vector with
# the key halves swapped, which is exactly what pins etm's ENC_KEY-first key order.
ETM_KEY = bytes(range(0x10, 0x20)) + bytes(range(0x10))
ETM_P = (
    b"A cipher system must not be required to be secret, and it must be able to fall into "
    b"the hands of the enemy without inconvenience"
)
ETM_IV = bytes.fromhex("1af38c2dc2b96ffdd86694092341bc04")
ETM_A = b"The second principle of Auguste Kerckhoffs"
ETM_OUT = bytes.fromhex(
    "1af38c2dc2b96ffdd86694092341bc04"
    "c80edfa32ddf39d5ef00c0b468834279a2e46a1b8049f792f76bfe54b903a9c9"
    "a94ac9b47ad2655c5f10f9aef71427e2fc6f9b3f399a221489f16362c7032336"
    "09d45ac69864e3321cf82935ac4096c86e133314c54019e8ca7980dfa4b9cf1b"
    "384c486f3a54c51078158ee5d79de59fbd34d848b3d69550a67646344427ade5"
    "4b8851ffb598f7f80074b9473c82e2db"
    "652c3fa36b0a7c5b3219fab3a30bc1c4"
)


# --- an independent reference implementation ------------------------------------------------


def ref_seal(key: bytes, iv: bytes, plaintext: bytes, ad: bytes = b"") -> bytes:
    enc_key, mac_key = key[:16], key[16:]
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    c = enc.update(padded) + enc.finalize()
    tag = hmac.new(
        mac_key, ad + iv + c + struct.pack(">Q", 8 * len(ad)), hashlib.sha256
    )
    return iv + c + tag.digest()[:16]


def ref_open(key: bytes, sealed: bytes, ad: bytes = b"") -> bytes:
    enc_key, mac_key = key[:16], key[16:]
    iv, c, tag = sealed[:16], sealed[16:-16], sealed[-16:]
    want = hmac.new(
        mac_key, ad + iv + c + struct.pack(">Q", 8 * len(ad)), hashlib.sha256
    )
    assert hmac.compare_digest(want.digest()[:16], tag), "reference: frame tag mismatch"
    dec = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(dec.update(c) + dec.finalize()) + unpadder.finalize()


def ref_parse(secret: bytes, blob: bytes) -> list[bytes]:
    """Split an object by hand, check its outer HMAC and return the sealed frames."""
    assert blob[:10] == b"distsync01"
    frames, pos = [], 10
    while True:
        (length,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        if length == 0:
            break
        frames.append(blob[pos : pos + length])
        pos += length
    assert len(blob) == pos + 32, "reference: wrong trailer length"
    assert hmac.compare_digest(
        hmac.new(secret, blob[:pos], hashlib.sha256).digest(), blob[pos:]
    )
    return frames


def ref_build(secret: bytes, frames: list[bytes]) -> bytes:
    """Assemble an object from already-sealed frames, as the Go writer framed them."""
    body = b"distsync01" + b"".join(struct.pack(">I", len(f)) + f for f in frames)
    body += struct.pack(">I", 0)
    return body + hmac.new(secret, body, hashlib.sha256).digest()


def ref_object(secret: bytes, pieces: list[bytes]) -> bytes:
    rng = random.Random(len(pieces))
    return ref_build(secret, [ref_seal(secret, rng.randbytes(16), p) for p in pieces])


# Three short frames, as the Go writer produced when its single Read() came up short (a pipe).
PIECES = [b"first piece ", b"", b"and the third, a little longer than one block"]
SMALL = ref_object(SECRET, PIECES)


# --- helpers ------------------------------------------------------------------------------


class PipeReader:
    """Only read(), short reads, never seek: the shape of a socket or pipe."""

    def __init__(self, data: bytes, max_read: int = 7) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._max = max_read
        self.sizes: list[int] = []

    def read(self, size: int = -1) -> bytes:
        self.sizes.append(size)
        if size is None or size < 0:
            raise AssertionError("decoder tried to read the whole stream")
        n = min(size, self._max)
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(chunk)
        return chunk


def decode(blob: bytes, secret: bytes = SECRET) -> bytes:
    out = io.BytesIO()
    legacy.decode_legacy(secret, io.BytesIO(blob), out)
    return out.getvalue()


def encode(data: bytes, secret: bytes = SECRET) -> bytes:
    out = io.BytesIO()
    written = legacy.encode_legacy(secret, io.BytesIO(data), out)
    assert written == len(out.getvalue())
    return out.getvalue()


@pytest.fixture
def fixed_ivs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    queue: list[bytes] = []
    monkeypatch.setattr(legacy, "_new_iv", lambda: queue.pop(0))
    yield queue


def frames_of(blob: bytes) -> list[bytes]:
    return ref_parse(SECRET, blob)


# --- the AEAD and the vectors -----------------------------------------------------------------


def test_reference_and_ours_match_codahale_etm_vector() -> None:
    assert ref_seal(ETM_KEY, ETM_IV, ETM_P, ETM_A) == ETM_OUT
    assert CbcHmacAead.etm(ETM_KEY).seal(ETM_P, ETM_A, iv=ETM_IV) == ETM_OUT
    assert ref_open(ETM_KEY, ETM_OUT, ETM_A) == ETM_P


def test_vector_encodes_exactly(fixed_ivs: list[bytes]) -> None:
    fixed_ivs.append(VECTOR_IV)
    assert encode(VECTOR_PLAINTEXT) == VECTOR_OBJECT
    assert encode(b"") == EMPTY_OBJECT


def test_vector_checked_independently() -> None:
    (frame,) = ref_parse(SECRET, VECTOR_OBJECT)
    assert frame[:16] == VECTOR_IV
    assert ref_open(SECRET, frame) == VECTOR_PLAINTEXT
    assert ref_parse(SECRET, EMPTY_OBJECT) == []


def test_vector_decodes() -> None:
    assert decode(VECTOR_OBJECT) == VECTOR_PLAINTEXT
    assert decode(EMPTY_OBJECT) == b""


# --- round trips and framing ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 999_999, 1_000_000, 1_000_001, 2_500_000])
def test_round_trip_and_framing(size: int) -> None:
    data = random.Random(size).randbytes(size)
    seen: list[int] = []
    out = io.BytesIO()
    written = legacy.encode_legacy(SECRET, io.BytesIO(data), out, progress=seen.append)
    blob = out.getvalue()
    assert written == len(blob)
    assert sum(seen) == size

    frames = ref_parse(SECRET, blob)
    full, rest = divmod(size, legacy.LEGACY_CHUNK_SIZE)
    expected = [legacy.LEGACY_CHUNK_SIZE] * full + ([rest] if rest else [])
    assert [len(ref_open(SECRET, f)) for f in frames] == expected
    assert [len(f) for f in frames] == [32 + 16 * (n // 16 + 1) for n in expected]
    assert b"".join(ref_open(SECRET, f) for f in frames) == data
    assert len({f[:16] for f in frames}) == len(frames), "IVs must be fresh per frame"

    seen.clear()
    plain = io.BytesIO()
    assert (
        legacy.decode_legacy(SECRET, io.BytesIO(blob), plain, progress=seen.append)
        == size
    )
    assert plain.getvalue() == data
    assert sum(seen) == size


def test_decodes_go_style_short_frames_including_empty_plaintext() -> None:
    assert decode(SMALL) == b"".join(PIECES)
    big = ref_object(
        SECRET, [b"x" * 3_000_000]
    )  # Go accepted frames up to 10,000,000 bytes
    assert decode(big) == b"x" * 3_000_000


def test_streams_through_short_reads_without_seeking_or_reading_all() -> None:
    data = random.Random(7).randbytes(1_200_000)
    blob = encode(data)
    src = PipeReader(blob, max_read=65_536)
    out = io.BytesIO()
    legacy.decode_legacy(SECRET, src, out)  # type: ignore[arg-type]
    assert out.getvalue() == data
    assert max(src.sizes) <= legacy.LEGACY_MAX_FRAME

    # Frames stay full-size however short the source's reads are.
    enc = io.BytesIO()
    legacy.encode_legacy(SECRET, PipeReader(data, max_read=4096), enc)  # type: ignore[arg-type]
    assert [len(ref_open(SECRET, f)) for f in frames_of(enc.getvalue())] == [
        1_000_000,
        200_000,
    ]


def test_is_legacy() -> None:
    assert legacy.is_legacy(VECTOR_OBJECT[:16])
    assert legacy.is_legacy(b"distsync01")
    assert not legacy.is_legacy(b"distsync0")
    assert not legacy.is_legacy(b"distsync02....")
    assert not legacy.is_legacy(b"")


# --- tampering --------------------------------------------------------------------------------


def test_every_truncation_is_detected() -> None:
    for cut in range(len(SMALL)):
        with pytest.raises(IntegrityError):
            decode(SMALL[:cut])


def test_every_single_bit_flip_is_detected() -> None:
    for pos in range(len(SMALL)):
        for bit in (0x01, 0x80):
            bad = bytearray(SMALL)
            bad[pos] ^= bit
            with pytest.raises(IntegrityError):
                decode(bytes(bad))


def _rebuilt(frames: list[bytes]) -> bytes:
    """Reassemble valid frames but keep SMALL's original outer HMAC (no secret needed)."""
    body = b"distsync01" + b"".join(struct.pack(">I", len(f)) + f for f in frames)
    return body + struct.pack(">I", 0) + SMALL[-32:]


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda f: f[:1] + f[2:], id="dropped"),
        pytest.param(lambda f: f[:2] + f[1:], id="duplicated"),
        pytest.param(lambda f: [f[2], f[0], f[1]], id="reordered"),
        pytest.param(
            lambda f: [*f, ref_seal(SECRET, b"\x07" * 16, b"extra")], id="appended"
        ),
    ],
)
def test_frame_level_edits_caught_by_outer_hmac(
    edit: Callable[[list[bytes]], list[bytes]],
) -> None:
    frames = ref_parse(SECRET, SMALL)
    bad = _rebuilt(edit(frames))
    with pytest.raises(IntegrityError, match="whole-object HMAC mismatch"):
        decode(bad)


def test_splicing_two_objects_is_detected() -> None:
    other = ref_object(SECRET, [b"another artifact"])
    spliced = _rebuilt(ref_parse(SECRET, SMALL)[:1] + ref_parse(SECRET, other))
    with pytest.raises(IntegrityError, match="HMAC"):
        decode(spliced)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        pytest.param(SMALL[:-32], "HMAC missing", id="missing-hmac"),
        pytest.param(SMALL[:-1], "HMAC missing", id="short-hmac"),
        pytest.param(
            SMALL[:-1] + bytes([SMALL[-1] ^ 1]), "HMAC mismatch", id="wrong-hmac"
        ),
        pytest.param(SMALL + b"\x00", "after its HMAC", id="trailing-byte"),
        pytest.param(SMALL + SMALL, "after its HMAC", id="trailing-object"),
        pytest.param(SMALL[:-36], "truncated", id="missing-terminator-and-hmac"),
        pytest.param(
            SMALL[:-36] + SMALL[-32:], "length|truncated|HMAC", id="missing-terminator"
        ),
        pytest.param(b"distsync01", "truncated", id="magic-only"),
        pytest.param(b"", "bad magic", id="empty-input"),
        pytest.param(b"distsync02" + SMALL[10:], "bad magic", id="other-version"),
    ],
)
def test_damaged_objects(blob: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        decode(blob)


def test_wrong_secret() -> None:
    with pytest.raises(IntegrityError, match="frame 0 failed authentication"):
        decode(SMALL, OTHER_SECRET)
    with pytest.raises(IntegrityError, match="HMAC mismatch"):
        decode(EMPTY_OBJECT, OTHER_SECRET)


def test_frame_tag_is_checked_as_each_frame_arrives() -> None:
    bad = bytearray(SMALL)
    bad[14 + 20] ^= 1  # inside frame 0's ciphertext
    out = io.BytesIO()
    with pytest.raises(IntegrityError, match="frame 0"):
        legacy.decode_legacy(SECRET, io.BytesIO(bytes(bad)), out)
    assert out.getvalue() == b""


# 10_000_016 and 0xFFFFFFF0 are well-formed (32 + 16k) but over the 10,000,000 limit.
@pytest.mark.parametrize(
    "length", [1, 15, 32, 33, 47, 49, 10_000_001, 10_000_016, 0xFFFFFFF0, 0xFFFFFFFF]
)
@pytest.mark.parametrize("where", ["first", "second"])
def test_malformed_frame_length_is_a_format_error(length: int, where: str) -> None:
    head = (
        SMALL[:10]
        if where == "first"
        else SMALL[: 14 + len(ref_parse(SECRET, SMALL)[0])]
    )
    index = "0" if where == "first" else "1"
    src = PipeReader(head + struct.pack(">I", length) + b"\x00" * 64, max_read=1 << 30)
    with pytest.raises(FormatError, match=f"frame {index} has an impossible length"):
        legacy.decode_legacy(SECRET, src, io.BytesIO())  # type: ignore[arg-type]
    assert max(src.sizes) <= legacy.LEGACY_MAX_FRAME


def test_zero_length_first_frame_is_an_early_end_not_a_crash() -> None:
    with pytest.raises(IntegrityError, match="HMAC"):
        decode(b"distsync01" + struct.pack(">I", 0) + SMALL[10:])


def test_largest_allowed_length_is_read_then_found_truncated() -> None:
    blob = b"distsync01" + struct.pack(">I", legacy.LEGACY_MAX_FRAME) + b"\x00" * 100
    with pytest.raises(IntegrityError, match="truncated") as info:
        decode(blob)
    assert not isinstance(info.value, FormatError)


def test_wrong_length_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decode(SMALL, SECRET[:16])


# --- property tests: nothing but IntegrityError, ever ---------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300), st.binary(max_size=300).map(b"distsync01".__add__)
    )
)
def test_arbitrary_bytes_only_raise_integrity_error(blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        decode(blob)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SMALL)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "copy", "set"]))
        if kind == "flip" and pos < len(data):
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif kind == "copy":
            start = draw(st.integers(0, len(data)))
            data[pos:pos] = data[start : start + draw(st.integers(1, 80))]
        elif kind == "set" and pos + 4 <= len(data):
            data[pos : pos + 4] = struct.pack(">I", draw(st.integers(0, 0xFFFFFFFF)))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_any_mutation_of_a_valid_object_is_rejected(blob: bytes) -> None:
    assume(blob != SMALL)
    with pytest.raises(IntegrityError):
        decode(blob)


# --- 0.1.0 encrypted names --------------------------------------------------------------------


def test_name_vectors(fixed_ivs: list[bytes]) -> None:
    for name, key in NAME_VECTORS.items():
        fixed_ivs.append(NAME_IV)
        assert legacy.encrypt_legacy_name(SECRET, name) == key
        assert legacy.decrypt_legacy_name(SECRET, key) == name


@pytest.mark.parametrize(
    "name",
    [
        "app.tgz",
        "",
        "a" * 15,
        "b" * 16,
        "release/v1 2.tar.gz",
        "ünïcødé-☃.tar",
        "x" * 500,
    ],
)
def test_name_round_trip_and_structure(name: str) -> None:
    key = legacy.encrypt_legacy_name(SECRET, name)
    assert legacy.is_legacy_encrypted_name(key)
    assert legacy.decrypt_legacy_name(SECRET, key) == name
    assert key != legacy.encrypt_legacy_name(SECRET, name), "IV must be random"
    # Known structure, checked by hand: padded base64url of b"d0" || IV || C || T.
    assert len(key) % 4 == 0 and set(key) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="
    )
    raw = base64.urlsafe_b64decode(key)
    clear = name.encode()
    assert raw[:2] == b"d0"
    assert len(raw) == 2 + 16 + 16 * (len(clear) // 16 + 1) + 16
    assert ref_open(SECRET, raw[2:]) == clear
    assert key.startswith("ZD")


def test_name_padding_is_kept() -> None:
    key = legacy.encrypt_legacy_name(SECRET, "app.tgz")  # 50 raw bytes -> one '='
    assert key.endswith("=") and not key.endswith("==")
    with pytest.raises(FormatError):
        legacy.decrypt_legacy_name(SECRET, key.rstrip("="))


def test_non_utf8_file_names_survive() -> None:
    name = b"caf\xe9.tgz".decode("utf-8", "surrogateescape")  # what os.fsdecode gives
    assert (
        legacy.decrypt_legacy_name(SECRET, legacy.encrypt_legacy_name(SECRET, name))
        == name
    )
    with pytest.raises(ValueError):
        legacy.encrypt_legacy_name(SECRET, "\ud800")


def _canonical_variant(key: str) -> str:
    """Same bytes, different text: set unused low bits of the last base64 digit."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = len(key.rstrip("=")) - 1
    return key[:i] + alphabet[alphabet.index(key[i]) | 1] + key[i + 1 :]


GOOD_KEY = NAME_VECTORS["app.tgz"]


@pytest.mark.parametrize(
    "key",
    [
        "",
        "app.tar.gz",
        "release-1.2.3.tar.gz",
        "ZDA=",
        "ZGlzdHN5bmM=",
        GOOD_KEY.rstrip("="),
        GOOD_KEY + "====",
        " " + GOOD_KEY,
        GOOD_KEY + "\n",
        NAME_VECTORS["app-1.2.3.tar.gz"].replace("-", "+").replace("_", "/"),
        "ZDBg€" + GOOD_KEY[5:],
        _canonical_variant(GOOD_KEY),
        base64.urlsafe_b64encode(
            b"d1" + base64.urlsafe_b64decode(GOOD_KEY)[2:]
        ).decode(),
        base64.urlsafe_b64encode(base64.urlsafe_b64decode(GOOD_KEY) + b"\x00").decode(),
    ],
)
def test_garbage_keys_are_format_errors(key: str) -> None:
    assert not legacy.is_legacy_encrypted_name(key)
    with pytest.raises(FormatError, match=r"not a distsync 0\.1\.0 encrypted name"):
        legacy.decrypt_legacy_name(SECRET, key)


def test_name_with_wrong_secret_or_altered_is_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="failed authentication") as info:
        legacy.decrypt_legacy_name(OTHER_SECRET, GOOD_KEY)
    assert not isinstance(info.value, FormatError)
    raw = bytearray(base64.urlsafe_b64decode(GOOD_KEY))
    raw[20] ^= 1
    with pytest.raises(IntegrityError, match="failed authentication"):
        legacy.decrypt_legacy_name(
            SECRET, base64.urlsafe_b64encode(bytes(raw)).decode()
        )


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=120), st.text(max_size=120).map("ZDBg".__add__)))
def test_arbitrary_keys_only_raise_integrity_error(key: str) -> None:
    legacy.is_legacy_encrypted_name(key)
    with pytest.raises(IntegrityError):
        legacy.decrypt_legacy_name(SECRET, key)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(GOOD_KEY) - 1), st.characters(codec="ascii"))
def test_any_edit_of_a_valid_key_is_rejected(pos: int, char: str) -> None:
    key = GOOD_KEY[:pos] + char + GOOD_KEY[pos + 1 :]
    assume(key != GOOD_KEY)
    with pytest.raises(IntegrityError):
        legacy.decrypt_legacy_name(SECRET, key)
