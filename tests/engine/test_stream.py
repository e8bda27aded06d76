"""The v3 stream format: round trips, one test per attack, fuzzing, bounded memory, vectors.

``ref_encrypt`` re-implements the format from docs/FORMAT.md with ``hmac`` and
``cryptography`` directly, and the vectors are read from docs/FORMAT.md itself, so these tests
never just compare our code with itself and the document cannot drift from the code.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import hmac
import io
import re
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from distsync.crypto import stream
from distsync.crypto.aead import CbcHmacAead
from distsync.crypto.keys import derive_key
from distsync.crypto.secret import parse_secret
from distsync.errors import FormatError, IntegrityError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
C = stream.MIN_CHUNK_SIZE  # 16 KiB keeps every test fast
FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"


def pattern(size: int, seed: int = 0) -> bytes:
    return bytes((j * 7 + seed) % 251 for j in range(size))


def encrypt(plaintext: bytes, secret: bytes = SECRET, chunk_size: int = C, **kw: int) -> bytes:
    out = io.BytesIO()
    stream.encrypt_stream(secret, io.BytesIO(plaintext), out, chunk_size=chunk_size, **kw)
    return out.getvalue()


def decrypt(obj: bytes, secret: bytes = SECRET, dst: BinaryIO | None = None, **kw: int) -> bytes:
    out = io.BytesIO() if dst is None else dst
    stream.decrypt_stream(secret, io.BytesIO(obj), out, **kw)
    return out.getvalue() if isinstance(out, io.BytesIO) else b""


def counting_ivs() -> Callable[[int], bytes]:
    """IV of chunk i = bytes([i]) * 16, as in the documented vectors."""
    state = {"next": 0}

    def source(n: int) -> bytes:
        i = state["next"]
        state["next"] += 1
        return bytes([i % 256]) * n

    return source


# --- an independent reference encoder, written from docs/FORMAT.md -------------------------


def ref_encrypt(
    secret: bytes, salt: bytes, chunk_size: int, plaintext: bytes, iv: Callable[[int], bytes]
) -> bytes:
    def hkdf(info: bytes) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt, info).derive(secret)

    content, header_key = hkdf(b"distsync v3 content"), hkdf(b"distsync v3 header")
    header = b"distsync\x03\x01\x00\x00" + struct.pack(">I", chunk_size) + salt
    header += hmac.new(header_key, header, "sha256").digest()[:16]
    pieces = [plaintext[i : i + chunk_size] for i in range(0, len(plaintext), chunk_size)]
    out = header
    for i, piece in enumerate(pieces or [b""]):
        ad = header + struct.pack(">Q", i) + bytes([i == max(len(pieces), 1) - 1])
        padder = padding.PKCS7(128).padder()
        padded = padder.update(piece) + padder.finalize()
        chunk_iv = iv(i)
        body = Cipher(algorithms.AES(content[16:]), modes.CBC(chunk_iv)).encryptor()
        e = body.update(padded) + body.finalize()
        tag = hmac.new(content[:16], ad + chunk_iv + e + struct.pack(">Q", 8 * len(ad)), "sha256")
        out += chunk_iv + e + tag.digest()[:16]
    return out


def test_reference_encoder_matches_the_implementation() -> None:
    salt = bytes(range(100, 132))
    for size in (0, 5, C, 2 * C + 3):
        plaintext = pattern(size)
        enc = stream.StreamEncryptor(SECRET, C, salt=salt, iv_source=counting_ivs())
        out = io.BytesIO()
        stream.encrypt_with(enc, io.BytesIO(plaintext), out, workers=3)
        assert out.getvalue() == ref_encrypt(SECRET, salt, C, plaintext, lambda i: bytes([i]) * 16)


# --- the documented vectors --------------------------------------------------------------


def doc_blocks() -> list[dict[str, str]]:
    """Every ``name = value`` code block of FORMAT.md's vector section; values may wrap."""
    text = FORMAT_MD.read_text(encoding="utf-8").split("## Test vectors", 1)[1]
    blocks = []
    for body in re.findall(r"```\n(.*?)```", text, re.DOTALL):
        fields: dict[str, str] = {}
        last = ""
        for line in body.splitlines():
            match = re.match(r"(\w+)\s+= (.*)$", line)
            if match:
                last = match[1]
                fields[last] = match[2].strip()
            elif line.strip():
                fields[last] += line.strip()
        blocks.append(fields)
    return blocks


DOC_PLAINTEXTS = {
    "byte j = j mod 251, for j = 0 … 39999 (40000 bytes)": bytes(j % 251 for j in range(40000)),
}


def doc_plaintext(definition: str) -> bytes:
    if definition in DOC_PLAINTEXTS:
        return DOC_PLAINTEXTS[definition]
    literal, size = re.fullmatch(r'(".*") \((\d+)[^)]*\)', definition).groups()  # type: ignore[union-attr]
    value = ast.literal_eval("b" + literal)
    assert isinstance(value, bytes) and len(value) == int(size)
    return value


def test_documented_keys() -> None:
    common = doc_blocks()[0]
    secret = bytes.fromhex(common["secret"])
    assert parse_secret(common["SharedSecret"]) == secret
    salt = bytes.fromhex(common["salt"])
    assert derive_key(secret, "v3 content", salt=salt).hex() == common["content_key"]
    assert derive_key(secret, "v3 header", salt=salt).hex() == common["header_key"]


@pytest.mark.parametrize("name", ["short", "empty", "multi"])
def test_documented_vectors(name: str) -> None:
    blocks = doc_blocks()
    common = blocks[0]
    (vector,) = [b for b in blocks if b.get("vector") == name]
    secret, salt = bytes.fromhex(common["secret"]), bytes.fromhex(common["salt"])
    chunk_size = int(vector["chunk_size"])
    plaintext = doc_plaintext(vector["plaintext"])
    assert hashlib.sha256(plaintext).hexdigest() == vector["plaintext_sha256"]

    enc = stream.StreamEncryptor(secret, chunk_size, salt=salt, iv_source=counting_ivs())
    out = io.BytesIO()
    result = stream.encrypt_with(enc, io.BytesIO(plaintext), out, workers=2)
    obj = out.getvalue()
    assert obj == ref_encrypt(secret, salt, chunk_size, plaintext, lambda i: bytes([i]) * 16)
    assert hashlib.sha256(obj).hexdigest() == vector["object_sha256"]
    assert result.plaintext_sha256 == vector["plaintext_sha256"]
    assert result.tags_sha256 == vector["tags_sha256"]
    assert result.ciphertext_size == len(obj) == stream.ciphertext_size(len(plaintext), chunk_size)
    if "object" in vector:
        assert obj.hex() == vector["object"]
    if "header" in vector:
        assert obj[:64].hex() == vector["header"]
    if "object_size" in vector:
        assert len(obj) == int(vector["object_size"])
    if "ad_0" in vector:
        assert vector["ad_0"] == "header || 0000000000000000 || 01"
    count = stream.chunk_count(len(plaintext), chunk_size)
    documented = [key for key in vector if re.fullmatch(r"chunk_\d+", key)]
    assert documented in ([], [f"chunk_{i}" for i in range(count)])
    for i in range(count):
        if f"chunk_{i}" in vector:
            offset, size, iv, tag = re.fullmatch(
                r"offset (\d+), (\d+) bytes, IV (\w\w)…\w\w, tag (\w+)", vector[f"chunk_{i}"]
            ).groups()  # type: ignore[union-attr]
            chunk = obj[int(offset) : int(offset) + int(size)]
            assert int(offset) == stream.HEADER_LEN + i * (chunk_size + 48)
            assert len(chunk) == int(size)
            assert chunk[:16] == bytes.fromhex(iv) * 16
            assert chunk[-16:].hex() == tag
    back = io.BytesIO()
    assert stream.decrypt_stream(secret, io.BytesIO(obj), back) == result
    assert back.getvalue() == plaintext


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, C - 1, C, C + 1, 3 * C, 3 * C + 17, 5 * C - 1])
@pytest.mark.parametrize("workers", [1, 3])
def test_round_trip(size: int, workers: int) -> None:
    plaintext = pattern(size)
    src, out = io.BytesIO(plaintext), io.BytesIO()
    result = stream.encrypt_stream(SECRET, src, out, chunk_size=C, workers=workers)
    obj = out.getvalue()
    assert result.plaintext_size == size
    assert result.ciphertext_size == len(obj) == stream.ciphertext_size(size, C)
    assert result.plaintext_sha256 == hashlib.sha256(plaintext).hexdigest()
    upper = stream.plaintext_size_from_ciphertext(len(obj), C)
    assert upper - 15 <= size <= upper
    assert stream.is_v3(obj[:9])
    back = io.BytesIO()
    assert stream.decrypt_stream(SECRET, io.BytesIO(obj), back, workers=workers) == result
    assert back.getvalue() == plaintext


def test_many_chunks_keep_their_order() -> None:
    plaintext = pattern(200 * C + 5, seed=3)
    assert decrypt(encrypt(plaintext, workers=4), workers=4) == plaintext


def test_default_chunk_size_and_random_salt() -> None:
    a, b = encrypt(b"x", chunk_size=stream.DEFAULT_CHUNK_SIZE), encrypt(b"x", chunk_size=1 << 20)
    assert struct.unpack(">I", a[12:16])[0] == stream.DEFAULT_CHUNK_SIZE
    assert a[16:48] != b[16:48] and a[64:80] != b[64:80]  # fresh salt and IV


class Trickle(io.RawIOBase):
    """A pipe-like source: ``read`` only, and it returns fewer bytes than asked."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.turn = data, 0, 0

    def read(self, size: int = -1) -> bytes:
        assert size > 0, "the whole stream must never be requested"
        self.turn += 1
        size = min(size, 1 + (self.turn * 7919) % 5000)
        piece = self.data[self.pos : self.pos + size]
        self.pos += len(piece)
        return piece


def test_short_reads_from_a_pipe() -> None:
    plaintext = pattern(3 * C + 100)
    obj = encrypt(plaintext)
    out = io.BytesIO()
    stream.encrypt_stream(SECRET, Trickle(plaintext), out, chunk_size=C)  # type: ignore[arg-type]
    assert decrypt(out.getvalue()) == plaintext
    back = io.BytesIO()
    stream.decrypt_stream(SECRET, Trickle(obj), back)  # type: ignore[arg-type]
    assert back.getvalue() == plaintext


def test_progress_reports_each_chunk_in_order() -> None:
    seen: list[int] = []
    plaintext = pattern(2 * C + 10)
    out = io.BytesIO()
    stream.encrypt_stream(SECRET, io.BytesIO(plaintext), out, chunk_size=C, progress=seen.append)
    assert seen == [C, C, 10]
    seen.clear()
    stream.decrypt_stream(SECRET, io.BytesIO(out.getvalue()), io.BytesIO(), progress=seen.append)
    assert seen == [C, C, 10]


def test_random_access_by_offset() -> None:
    plaintext = pattern(3 * C + 40)
    obj = encrypt(plaintext)
    dec = stream.StreamDecryptor(SECRET, obj[:64])
    assert dec.header.chunk_size == C and dec.header.raw == obj[:64]
    count = stream.chunk_count(stream.plaintext_size_from_ciphertext(len(obj), C), C)
    assert count == 4
    for i in reversed(range(count)):
        start = dec.chunk_offset(i)
        sealed = obj[start : start + C + 48]
        assert dec.open_chunk(i, sealed, final=i == count - 1) == plaintext[i * C : (i + 1) * C]


def test_encryptor_refuses_misuse() -> None:
    enc = stream.StreamEncryptor(SECRET, C)
    with pytest.raises(ValueError):
        enc.seal_chunk(0, b"short", final=False)
    with pytest.raises(ValueError):
        enc.seal_chunk(1, b"", final=True)
    with pytest.raises(ValueError):
        enc.seal_chunk(0, bytes(C + 1), final=True)
    for bad in (C + 1, C - 16, 64 << 20 | 16, 0):
        with pytest.raises(ValueError):
            stream.StreamEncryptor(SECRET, bad)
    with pytest.raises(ValueError):
        stream.StreamEncryptor(SECRET, C, salt=bytes(31))


def test_errors_of_the_destination_propagate() -> None:
    class Full(io.RawIOBase):
        def write(self, data: object) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        stream.encrypt_stream(SECRET, io.BytesIO(pattern(3 * C)), Full())  # type: ignore[arg-type]


# --- attacks: every one must raise IntegrityError and release no unverified plaintext ----------

PLAIN = pattern(3 * C + 1000, seed=11)  # four chunks, the last one short


@pytest.fixture(scope="module")
def obj() -> bytes:
    return encrypt(PLAIN)


def chunks(obj: bytes) -> list[bytes]:
    body = obj[64:]
    return [body[i : i + C + 48] for i in range(0, len(body), C + 48)]


def rejected(obj: bytes, secret: bytes = SECRET, match: str | None = None) -> bytes:
    """Decrypt, expect IntegrityError, return what was written before the failure."""
    out = io.BytesIO()
    with pytest.raises(IntegrityError, match=match):
        stream.decrypt_stream(secret, io.BytesIO(obj), out, workers=2)
    return out.getvalue()


def flip_positions(size: int) -> list[int]:
    """Every header byte, every IV and tag, 40 bytes around each boundary, a sample elsewhere."""
    positions = set(range(64)) | set(range(0, size, 101))
    for start in range(64, size, C + 48):
        end = min(start + C + 48, size)
        positions |= set(range(start - 20, start + 36))  # boundary and IV
        positions |= set(range(end - 36, min(end + 20, size)))  # tag and boundary
    return sorted(p for p in positions if 0 <= p < size)


def test_every_single_byte_flip_is_rejected(obj: bytes) -> None:
    positions = flip_positions(len(obj))
    assert len(positions) > 800
    for pos in positions:
        damaged = bytearray(obj)
        damaged[pos] ^= 0x80
        written = rejected(bytes(damaged))
        # Chunks before the damaged one may be written; nothing else, never altered bytes.
        first_bad = max(0, (pos - 64) // (C + 48))
        assert written == PLAIN[: first_bad * C] if pos >= 64 else written == b"", pos


@pytest.mark.parametrize("cut_chunks", [0, 1, 2, 3])
def test_truncation_at_a_chunk_boundary(obj: bytes, cut_chunks: int) -> None:
    cut = obj[: 64 + cut_chunks * (C + 48)]
    assert rejected(cut, match="truncated") == PLAIN[: max(0, cut_chunks - 1) * C]


@pytest.mark.parametrize("delta", [1, 15, 16, 17, 48, 1000, C])
def test_truncation_between_boundaries(obj: bytes, delta: int) -> None:
    for boundary in range(64, len(obj), C + 48):
        if boundary + delta < len(obj):
            rejected(obj[: boundary + delta])
        rejected(obj[: boundary - delta])
    rejected(obj[:-1])
    rejected(obj[:-16])


def test_header_alone_and_short_headers(obj: bytes) -> None:
    rejected(obj[:64], match="truncated")
    for size in (0, 1, 8, 9, 63):
        rejected(obj[:size], match="v3")


def test_dropped_duplicated_reordered_chunks(obj: bytes) -> None:
    c = chunks(obj)
    header = obj[:64]
    for order in ([0, 2, 3], [1, 2, 3], [0, 1, 3], [0, 0, 1, 2, 3], [0, 1, 1, 2, 3], [1, 0, 2, 3],
                  [0, 2, 1, 3], [0, 1, 2, 3, 3], [0, 1, 3, 2], [3]):  # fmt: skip
        rejected(header + b"".join(c[i] for i in order))


def test_chunk_spliced_from_another_object(obj: bytes) -> None:
    other = encrypt(pattern(len(PLAIN), seed=99))  # same secret, same chunk size
    mine, theirs = chunks(obj), chunks(other)
    for i in range(len(mine)):
        spliced = mine.copy()
        spliced[i] = theirs[i]
        rejected(obj[:64] + b"".join(spliced))
    rejected(other[:64] + obj[64:])  # a valid header of another object
    rejected(obj[:64] + other[64:])


def test_wrong_secret(obj: bytes) -> None:
    assert rejected(obj, OTHER_SECRET, match="wrong SharedSecret") == b""


def test_trailing_garbage(obj: bytes) -> None:
    for extra in (b"\x00", bytes(16), bytes(48), obj[64:128]):
        rejected(obj + extra)
    exact = encrypt(pattern(2 * C))  # the final chunk is full: the message can say what happened
    rejected(exact + chunks(exact)[0], match="trailing data")
    rejected(exact + bytes(C + 48), match="trailing data")
    rejected(exact + bytes(17), match="trailing data")


def retagged(header: bytearray, secret: bytes = SECRET) -> bytes:
    """A header changed by someone holding the key: its tag is valid again."""
    key = derive_key(secret, "v3 header", salt=bytes(header[16:48]))
    header[48:64] = hmac.new(key, bytes(header[:48]), "sha256").digest()[:16]
    return bytes(header)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, b"D", "magic"),
        (8, b"\x02", "version 2"),
        (8, b"\x04", "version 4"),
        (9, b"\x02", "suite 2"),
        (10, b"\x00\x01", "reserved"),
        (12, struct.pack(">I", C + 8), "chunk size"),
        (12, struct.pack(">I", C - 16), "chunk size"),
        (12, struct.pack(">I", (64 << 20) + 16), "chunk size"),
        (12, struct.pack(">I", 0xFFFFFFFF), "chunk size"),
    ],
)
def test_header_fields_are_checked_even_under_a_valid_tag(
    obj: bytes, offset: int, value: bytes, message: str
) -> None:
    header = bytearray(obj[:64])
    header[offset : offset + len(value)] = value
    with pytest.raises(FormatError, match=message):
        stream.StreamDecryptor(SECRET, retagged(header))
    rejected(retagged(header) + obj[64:], match=message)


def test_layout_rules_bind_even_key_holders() -> None:
    enc = stream.StreamEncryptor(SECRET, C)
    header = enc.header.raw
    aead = CbcHmacAead.draft(derive_key(SECRET, "v3 content", salt=enc.header.salt))

    def ad(i: int, final: bool) -> bytes:
        return header + struct.pack(">Q", i) + bytes([final])

    full = enc.seal_chunk(0, bytes(C), final=False)
    empty_final = aead.seal(b"", ad(1, True))
    rejected(header + full + empty_final, match="does not allow")
    # C + 5 bytes seal to C + 48, the size of a full chunk, but chunks hold exactly C.
    overfull = aead.seal(bytes(C + 5), ad(0, False))
    rejected(header + overfull + enc.seal_chunk(1, b"x", final=True), match="does not allow")


def test_is_v3() -> None:
    assert stream.is_v3(b"distsync\x03")
    assert not stream.is_v3(b"distsync01")
    assert not stream.is_v3(b"distsync")
    assert not stream.is_v3(b"")


def test_sizes() -> None:
    assert stream.ciphertext_size(0, C) == 64 + 48
    assert stream.ciphertext_size(C, C) == 64 + C + 48
    assert stream.ciphertext_size(C + 1, C) == 64 + C + 48 + 48
    assert stream.chunk_count(0, C) == 1 and stream.chunk_count(C + 1, C) == 2
    for bad in (0, 63, 64, 64 + 47, 64 + 49, 64 + C + 48 + 17):
        with pytest.raises(FormatError):
            stream.plaintext_size_from_ciphertext(bad, C)
    with pytest.raises(FormatError):
        stream.plaintext_size_from_ciphertext(1000, 1000)


@given(st.integers(0, 10 * C), st.sampled_from([C, 2 * C, 1 << 20]))
def test_size_formulas_agree(size: int, chunk_size: int) -> None:
    total = stream.ciphertext_size(size, chunk_size)
    upper = stream.plaintext_size_from_ciphertext(total, chunk_size)
    assert upper - 15 <= size <= upper
    assert stream.chunk_count(upper, chunk_size) == stream.chunk_count(size, chunk_size)


# --- fuzzing: arbitrary input raises IntegrityError and nothing else ---------------------------

FUZZ_OBJ = encrypt(pattern(2 * C + 500, seed=5))


def only_integrity_errors(data: bytes) -> None:
    try:
        decrypt(data, workers=2)
    except IntegrityError:
        return
    raise AssertionError("accepted bytes that are not an authentic object")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    only_integrity_errors(data)
    only_integrity_errors(FUZZ_OBJ[:64] + data)  # past the header into the chunk rules
    with contextlib.suppress(IntegrityError):
        stream.StreamDecryptor(SECRET, data[:64])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate", "copy"]),
            st.integers(0, len(FUZZ_OBJ)),
            st.integers(1, C + 100),
            st.integers(1, 255),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutations_of_a_valid_object(mutations: list[tuple[str, int, int, int]]) -> None:
    data = bytearray(FUZZ_OBJ)
    for op, pos, length, value in mutations:
        pos = min(pos, len(data))
        if op == "flip" and pos < len(data):
            data[pos] ^= value
        elif op == "insert":
            data[pos:pos] = bytes([value]) * (length % 64 + 1)
        elif op == "delete":
            del data[pos : pos + length]
        elif op == "truncate":
            del data[pos:]
        elif op == "copy":
            data[pos:pos] = data[length % len(data) : length % len(data) + length] if data else b""
    if bytes(data) == FUZZ_OBJ:
        return
    only_integrity_errors(bytes(data))


# --- memory: reads are bounded and nothing grows with the input ---------------------------------


class Generated(io.RawIOBase):
    """``size`` bytes made on demand; records every requested size. Only ``read``."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = pattern(1 << 20) * 2
        self.requests: list[int] = []

    def read(self, size: int = -1) -> bytes:
        self.requests.append(size)
        size = min(self.left, 1 << 20) if size < 0 else min(size, self.left, 1 << 20)
        self.left -= size
        return self.block[:size]


class Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.sha, self.size = hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        self.sha.update(view)
        self.size += len(view)
        return len(view)


class Recording(io.RawIOBase):
    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.requests: list[int] = []

    def read(self, size: int = -1) -> bytes:
        self.requests.append(size)
        return self.inner.read(size)


@pytest.mark.slow
def test_reads_and_memory_are_bounded(tmp_path: Path) -> None:
    size = 64 << 20
    chunk = stream.DEFAULT_CHUNK_SIZE
    src = Generated(size)
    path = tmp_path / "obj"
    tracemalloc.start()
    try:
        with path.open("wb") as dst:
            result = stream.encrypt_stream(SECRET, src, dst, workers=2)  # type: ignore[arg-type]
        encrypt_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        sink = Sink()
        with path.open("rb") as raw:
            recording = Recording(raw)  # type: ignore[arg-type]
            back = stream.decrypt_stream(SECRET, recording, sink, workers=2)  # type: ignore[arg-type]
        decrypt_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.plaintext_size == back.plaintext_size == sink.size == size
    assert back.plaintext_sha256 == result.plaintext_sha256 == sink.sha.hexdigest()
    assert 0 < max(src.requests) <= chunk and min(src.requests) > 0
    assert 0 < max(recording.requests) <= chunk + 48 and min(recording.requests) > 0
    # Six slots of two buffers for two workers: about 12 MiB whatever the input size.
    assert encrypt_peak < 20 << 20, encrypt_peak
    assert decrypt_peak < 20 << 20, decrypt_peak
