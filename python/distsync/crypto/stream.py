"""The v3 artifact format: a keyed header, then fixed-size chunks sealed one by one.

A STREAM construction in the style of age and Tink (byte layout and vectors: docs/FORMAT.md)::

    header  = "distsync" | 0x03 | suite 0x01 | 0x0000 | chunk_size u32be | salt[32] | tag[16]
    chunk i = AEAD_AES_128_CBC_HMAC_SHA_256(content_key).seal(piece_i,
                  ad = header || u64be(i) || final_flag)

Keys come from HKDF over the SharedSecret and the per-file salt. Binding the whole header, the
index and the final flag into every chunk's associated data is what detects reordering,
splicing between files, truncation at a chunk boundary and trailing data. Every non-final chunk
is full, so chunk ``i`` starts at ``64 + i * (chunk_size + 48)``: ranged downloads, parallel
decryption and resumes work on whole chunks.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from distsync.crypto.aead import BLOCK_LEN, IV_LEN, CbcHmacAead, sealed_len
from distsync.crypto.aead import TAG_LEN as CHUNK_TAG_LEN
from distsync.crypto.keys import derive_key
from distsync.errors import FormatError, IntegrityError, LocalIOError
from distsync.transfer.parallel import OrderedPipeline, Slot

__all__ = [
    "CHUNK_OVERHEAD",
    "DEFAULT_CHUNK_SIZE",
    "HEADER_LEN",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "SUITE",
    "VERSION",
    "Header",
    "StreamDecryptor",
    "StreamEncryptor",
    "StreamResult",
    "TagsDigest",
    "chunk_count",
    "chunks_in",
    "ciphertext_size",
    "decrypt_ranges",
    "decrypt_stream",
    "encrypt_stream",
    "encrypt_with",
    "is_v3",
    "plaintext_size_from_ciphertext",
]

MAGIC = b"distsync"
VERSION = 3
SUITE = 1  # AEAD_AES_128_CBC_HMAC_SHA_256, keys by HKDF-SHA256
HEADER_LEN = 64
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 16 << 10
MAX_CHUNK_SIZE = 64 << 20
CHUNK_OVERHEAD = 48  # IV + one padding block (chunks are block multiples) + tag
SALT_LEN = 32
_TAG_LEN = 16
_FIXED = struct.Struct(">8sBBHI")  # magic, version, suite, reserved, chunk_size
_MACED_LEN = _FIXED.size + SALT_LEN  # the header bytes covered by the header tag
_INDEX = struct.Struct(">Q")
_MAX_WORKERS = 4


def is_v3(prefix: bytes) -> bool:
    """True if ``prefix`` (at least 9 bytes) starts like a v3 header."""
    return len(prefix) > len(MAGIC) and prefix[: len(MAGIC)] == MAGIC and prefix[8] == VERSION


def _chunk_size_problem(chunk_size: int) -> str | None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size % BLOCK_LEN:
        return (
            f"chunk size {chunk_size} is not a multiple of 16 between "
            f"{MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        )
    return None


def _check_chunk_size(chunk_size: int) -> None:
    problem = _chunk_size_problem(chunk_size)
    if problem:
        raise ValueError(problem)


def chunk_count(plaintext_size: int, chunk_size: int) -> int:
    """Number of chunks for a plaintext: at least one (an empty file is one empty chunk)."""
    if plaintext_size < 0:
        raise ValueError("plaintext size must not be negative")
    _check_chunk_size(chunk_size)
    return max(1, -(-plaintext_size // chunk_size))


def ciphertext_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Exact size of the v3 object for a plaintext of ``plaintext_size`` bytes."""
    count = chunk_count(plaintext_size, chunk_size)
    last = plaintext_size - (count - 1) * chunk_size
    return HEADER_LEN + (count - 1) * (chunk_size + CHUNK_OVERHEAD) + sealed_len(last)


def plaintext_size_from_ciphertext(ciphertext_size: int, chunk_size: int) -> int:
    """The largest plaintext size a v3 object of ``ciphertext_size`` bytes can hold.

    PKCS#7 padding hides the low four bits of the last chunk's length, so the true size lies
    in ``[result - 15, result]`` (exact when the last chunk is full). To check a size taken
    from a manifest, compare ``ciphertext_size(size, chunk_size)`` instead. Raises FormatError
    if no plaintext encrypts to that many bytes.
    """
    problem = _chunk_size_problem(chunk_size)
    if problem:
        raise FormatError(f"not a valid v3 object: {problem}")
    if ciphertext_size >= HEADER_LEN + CHUNK_OVERHEAD:
        full, last = divmod(ciphertext_size - HEADER_LEN, chunk_size + CHUNK_OVERHEAD)
        if last == 0:
            return full * chunk_size
        if last % BLOCK_LEN == 0 and last >= CHUNK_OVERHEAD:
            # sealed_len(p) == 48 + 16 * (p // 16): the last piece has one of 16 sizes.
            return full * chunk_size + last - CHUNK_OVERHEAD + BLOCK_LEN - 1
    raise FormatError(f"{ciphertext_size} bytes is not the size of any v3 object")


@dataclass(frozen=True)
class Header:
    """A parsed, authenticated (or freshly made) v3 header; ``raw`` is all 64 bytes."""

    chunk_size: int
    salt: bytes
    raw: bytes


@dataclass(frozen=True)
class StreamResult:
    plaintext_size: int
    ciphertext_size: int
    plaintext_sha256: str | None  # hex; None when not asked for
    tags_sha256: str | None = None  # hex, ``TagsDigest``


class TagsDigest:
    """SHA-256 over the header and every chunk's tag, in chunk order (docs/FORMAT.md).

    Each tag is a MAC of its chunk's IV and ciphertext, the header, the index and the final
    flag, so this digest names the whole object as surely as the plaintext's SHA-256 does
    (other content for a given tag is a 2^128 search, with the key or without), for 16 bytes
    per chunk instead of every byte. A signed manifest carries it: a fetch checks it instead
    of hashing the plaintext, about a fifth of its CPU.
    """

    def __init__(self, header: bytes) -> None:
        self._hash = hashlib.sha256(header)

    def add(self, tags: bytes | memoryview) -> None:
        """The next chunks' tags, 16 bytes each, in order."""
        self._hash.update(tags)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _keys(secret: bytes, salt: bytes) -> tuple[CbcHmacAead, bytes]:
    content = CbcHmacAead.draft(derive_key(secret, "v3 content", salt=salt))
    return content, derive_key(secret, "v3 header", salt=salt)


def _header_tag(header_key: bytes, maced: bytes) -> bytes:
    return hmac.new(header_key, maced, hashlib.sha256).digest()[:_TAG_LEN]


def _associated_data(header: Header, index: int, final: bool) -> bytes:
    if not 0 <= index < 1 << 64:
        raise ValueError(f"chunk index {index} out of range")
    return header.raw + _INDEX.pack(index) + (b"\x01" if final else b"\x00")


class StreamEncryptor:
    """Makes a header and seals chunks under it. ``seal_chunk`` is safe to call from threads."""

    def __init__(
        self,
        secret: bytes,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        salt: bytes | None = None,
        iv_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        _check_chunk_size(chunk_size)
        salt = os.urandom(SALT_LEN) if salt is None else bytes(salt)
        if len(salt) != SALT_LEN:
            raise ValueError(f"salt must be {SALT_LEN} bytes")
        self._aead, header_key = _keys(secret, salt)
        maced = _FIXED.pack(MAGIC, VERSION, SUITE, 0, chunk_size) + salt
        self.header = Header(chunk_size, salt, maced + _header_tag(header_key, maced))
        self._iv_source = iv_source

    def next_iv(self) -> bytes:
        """One IV from ``iv_source``; callers that seal out of order draw IVs in chunk order."""
        iv = bytes(self._iv_source(IV_LEN))
        if len(iv) != IV_LEN:
            raise ValueError("iv_source must return 16 bytes")
        return iv

    def seal_chunk(self, index: int, plaintext: bytes | memoryview, final: bool) -> bytes:
        """Seal chunk ``index``: exactly chunk_size bytes, or 1..chunk_size if ``final``."""
        out = bytearray(sealed_len(len(plaintext)))
        self.seal_chunk_into(index, plaintext, final, self.next_iv(), out)
        return bytes(out)

    def seal_chunk_into(
        self,
        index: int,
        plaintext: bytes | memoryview,
        final: bool,
        iv: bytes,
        out: bytearray | memoryview,
    ) -> int:
        """``seal_chunk`` into a reusable buffer with a given IV; returns the sealed length."""
        size = len(plaintext)
        if not final and size != self.header.chunk_size:
            raise ValueError("a non-final chunk must hold exactly chunk_size bytes")
        if final and not (1 if index else 0) <= size <= self.header.chunk_size:
            raise ValueError("a final chunk holds 1..chunk_size bytes (0 only as chunk 0)")
        return self._aead.seal_into(plaintext, _associated_data(self.header, index, final), iv, out)


class StreamDecryptor:
    """Verifies a header, then opens chunks in any order (for ranged and parallel reads)."""

    def __init__(self, secret: bytes, header: bytes) -> None:
        raw = bytes(header)
        if len(raw) < HEADER_LEN:
            raise FormatError(
                f"not a distsync v3 object: {len(raw)} bytes, shorter than the "
                f"{HEADER_LEN}-byte header"
            )
        if len(raw) > HEADER_LEN:
            raise FormatError(f"a v3 header is {HEADER_LEN} bytes, got {len(raw)}")
        magic, version, suite, reserved, chunk_size = _FIXED.unpack_from(raw)
        if magic != MAGIC:
            raise FormatError("not a distsync v3 object (bad magic bytes)")
        if version != VERSION:
            raise FormatError(f"unsupported distsync format version {version} (this reads 3)")
        if suite != SUITE:
            raise FormatError(f"unsupported cipher suite {suite} in the v3 header")
        if reserved:
            raise FormatError("reserved header bytes are not zero")
        problem = _chunk_size_problem(chunk_size)
        if problem:
            raise FormatError(f"invalid v3 header: {problem}")
        salt = raw[_FIXED.size : _MACED_LEN]
        self._aead, header_key = _keys(secret, salt)
        if not hmac.compare_digest(_header_tag(header_key, raw[:_MACED_LEN]), raw[_MACED_LEN:]):
            raise IntegrityError("wrong SharedSecret, or the header was altered")
        self.header = Header(chunk_size, salt, raw)

    def chunk_offset(self, index: int) -> int:
        """Byte offset of chunk ``index`` in the object."""
        if index < 0:
            raise ValueError("chunk index must not be negative")
        return HEADER_LEN + index * (self.header.chunk_size + CHUNK_OVERHEAD)

    def open_chunk(self, index: int, sealed: bytes | memoryview, final: bool) -> bytes:
        """Verify and decrypt chunk ``index``; IntegrityError/FormatError on any mismatch."""
        out = bytearray(max(len(sealed), CHUNK_OVERHEAD))
        n = self.open_chunk_into(index, sealed, final, out)
        del out[n:]
        return bytes(out)

    def open_chunk_into(
        self, index: int, sealed: bytes | memoryview, final: bool, out: bytearray | memoryview
    ) -> int:
        """``open_chunk`` into a reusable buffer of ``len(sealed)`` bytes; returns its length."""
        full = self.header.chunk_size + CHUNK_OVERHEAD
        size = len(sealed)
        if not size:
            raise FormatError(f"truncated: the object ends before chunk {index} (none follows)")
        if not final and size != full:
            raise FormatError(f"chunk {index} is {size} bytes, a non-final chunk is {full}")
        if final and (size % BLOCK_LEN or not CHUNK_OVERHEAD <= size <= full):
            raise FormatError(
                f"truncated or malformed: the last chunk ({index}) has an impossible "
                f"length of {size} bytes"
            )
        try:
            n = self._aead.open_into(sealed, _associated_data(self.header, index, final), out)
        except IntegrityError:
            raise IntegrityError(self._diagnose(index, sealed, final)) from None
        if (not final and n != self.header.chunk_size) or (final and index and not n):
            # Only a key holder can make this: the layout rules say chunks are full.
            raise FormatError(f"chunk {index} holds {n} bytes, which the format does not allow")
        return n

    def _diagnose(self, index: int, sealed: bytes | memoryview, final: bool) -> str:
        """Name the failure; re-checking with the other final flag costs one MAC, once."""
        probe = bytearray(len(sealed))
        try:
            self._aead.open_into(sealed, _associated_data(self.header, index, not final), probe)
        except IntegrityError:
            return (
                f"chunk {index} failed authentication: the object was altered, truncated, "
                "reordered or spliced"
            )
        if final:
            return f"truncated: the object ends after chunk {index}, which is not the last one"
        return f"trailing data after the final chunk ({index})"


# --- streaming, in parallel ----------------------------------------------------------------
#
# Every large transfer runs through one OrderedPipeline (distsync.transfer.parallel): chunks
# are sealed or opened on a pool in reused buffers, a single thread writes them in order, and
# the plaintext SHA-256 runs beside them on a thread of its own. cryptography >= 50 and
# hashlib release the GIL in AES, HMAC and SHA-256, so these threads run on every core.


class _Source:
    """Fills buffers from a sequential reader: ``readinto`` when it has one, else ``read``."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._readinto = getattr(src, "readinto", None)

    def _read_some(self, view: memoryview) -> int | None:
        if self._readinto is not None:
            try:
                n: int | None = self._readinto(view)
                return n
            except (NotImplementedError, io.UnsupportedOperation):
                # e.g. an io.RawIOBase subclass that only overrides read()
                self._readinto = None
        data: bytes | None = self._src.read(len(view))
        if data is None:
            return None
        if len(data) > len(view):
            raise LocalIOError("the input returned more bytes than were asked for")
        view[: len(data)] = data
        return len(data)

    def fill(self, view: memoryview) -> int:
        """Fill ``view`` (short only at end of input); never asks for more than it holds."""
        got = 0
        while got < len(view):
            n = self._read_some(view[got:])
            if n is None:
                raise LocalIOError("the input is a non-blocking stream with no data ready")
            if not n:
                break
            got += n
        return got


def _write_all(dst: BinaryIO, view: memoryview) -> None:
    while len(view):
        n = dst.write(view)
        # Raw (unbuffered) files may write less than asked; buffered ones return len or None.
        if n is None or n >= len(view):
            return
        view = view[n:]


def _workers(workers: int) -> int:
    if workers < 0:
        raise ValueError("workers must be 0 (automatic) or more")
    return workers or min(os.cpu_count() or 1, _MAX_WORKERS)


def _depth(workers: int, unit_len: int) -> int:
    """Units in flight: enough to keep the workers, the reader, the writer and the digest busy
    (about two per worker); fewer for huge units, each already a long stretch of work."""
    return 2 * workers + 2 if unit_len <= 8 << 20 else workers + 2


class _Output:
    """A pipeline's ``deliver``: writes in order, counts, and reports progress in plaintext
    bytes (a unit's input when encrypting, its output when decrypting)."""

    def __init__(
        self,
        dst: BinaryIO,
        progress: Callable[[int], None] | None,
        *,
        plaintext_out: bool,
        tags: TagsDigest | None = None,
    ) -> None:
        self._dst = dst
        self._progress = progress
        self._plaintext_out = plaintext_out
        self._tags = tags  # given when sealed chunks go out: each ends with its tag
        self.written = 0

    def __call__(self, data: memoryview, size_in: int) -> None:
        _write_all(self._dst, data)
        if self._tags is not None:
            self._tags.add(data[-CHUNK_TAG_LEN:])
        self.written += len(data)
        if self._progress is not None:
            self._progress(len(data) if self._plaintext_out else size_in)


# job(index, input, final, output, iv) -> bytes written to output; runs on a worker thread.
_ChunkJob = Callable[[int, memoryview, bool, memoryview, bytes], int]


def _feed_in_order(
    src: BinaryIO,
    pipe: OrderedPipeline,
    in_len: int,
    job: _ChunkJob,
    draw_iv: Callable[[], bytes] | None = None,
    tags: TagsDigest | None = None,
) -> int:
    """Read ``src`` into the pipeline's slots, one chunk each, on the calling thread.

    Chunk ``i`` is final when the input ends after it, which takes one chunk of look-ahead
    (``src`` may be a pipe). IVs are drawn here, in chunk order, so a deterministic source
    gives the same bytes whatever the thread timing. ``tags`` gets the last 16 bytes of each
    unit read (sealed chunks: their tags). Returns the bytes read.
    """
    source = _Source(src)
    total = 0
    index = 0
    slot = pipe.next_slot()
    n = source.fill(slot.inbuf)
    while True:
        final = n < in_len
        if not final:
            ahead = pipe.next_slot()
            m = source.fill(ahead.inbuf)
            final = m == 0
        iv = draw_iv() if draw_iv is not None else b""
        if tags is not None:
            tags.add(slot.inbuf[max(0, n - CHUNK_TAG_LEN) : n])
        pipe.submit(slot, _chunk_task(job, index, n, final, iv), size_in=n, tag=n)
        total += n
        if final:
            return total
        slot, n, index = ahead, m, index + 1


def _chunk_task(
    job: _ChunkJob, index: int, size: int, final: bool, iv: bytes
) -> Callable[[Slot], int]:
    def run(slot: Slot) -> int:
        return job(index, slot.inbuf[:size], final, slot.outbuf, iv)

    return run


def encrypt_stream(
    secret: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
    workers: int = 0,
    hash_plaintext: bool = True,
) -> StreamResult:
    """Encrypt ``src`` (read sequentially: a pipe is fine) into ``dst`` as a v3 object.

    Memory stays at a few chunks per worker whatever the input size. ``progress(n)`` gets the
    plaintext bytes of each chunk once written (called on the writing thread, in order);
    ``workers=0`` means os.cpu_count(), at most 4. ``hash_plaintext=False`` skips the
    plaintext SHA-256 for callers that have no use for it (``plaintext_sha256`` is None).
    Errors of ``src``, ``dst`` and ``progress`` propagate unchanged.
    """
    enc = StreamEncryptor(secret, chunk_size)
    return encrypt_with(
        enc, src, dst, progress=progress, workers=workers, hash_plaintext=hash_plaintext
    )


def encrypt_with(
    enc: StreamEncryptor,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
    workers: int = 0,
    hash_plaintext: bool = True,
) -> StreamResult:
    """``encrypt_stream`` under a given encryptor: its header is known before the first byte
    (an upload names the object after it), and a fixed salt and IVs make vectors testable."""

    def seal(index: int, piece: memoryview, final: bool, out: memoryview, iv: bytes) -> int:
        return enc.seal_chunk_into(index, piece, final, iv, out)

    chunk = enc.header.chunk_size
    digest = hashlib.sha256() if hash_plaintext else None
    tags = TagsDigest(enc.header.raw)
    output = _Output(dst, progress, plaintext_out=False, tags=tags)
    count = _workers(workers)
    _write_all(dst, memoryview(enc.header.raw))
    with OrderedPipeline(
        workers=count,
        depth=_depth(count, chunk),
        in_len=chunk,
        out_len=chunk + CHUNK_OVERHEAD,
        deliver=output,
        beside=digest.update if digest is not None else None,
        beside_input=True,  # the plaintext is hashed as soon as it is read
        name="distsync-encrypt",
    ) as pipe:
        read = _feed_in_order(src, pipe, chunk, seal, enc.next_iv)
        pipe.join()
    sha256 = digest.hexdigest() if digest is not None else None
    return StreamResult(read, HEADER_LEN + output.written, sha256, tags.hexdigest())


def decrypt_stream(
    secret: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
    workers: int = 0,
    hash_plaintext: bool = True,
) -> StreamResult:
    """Verify and decrypt the v3 object read sequentially from ``src`` into ``dst``.

    Each chunk is written as soon as it and every chunk before it are verified, so after an
    IntegrityError ``dst`` holds some plaintext of an object that is not authentic: the caller
    writes into a temporary file and discards it unless this returns. Bad input raises only
    IntegrityError (or its subclass FormatError). Memory stays at a few chunks per worker.
    """
    raw = bytearray(HEADER_LEN)
    got = _Source(src).fill(memoryview(raw))
    dec = StreamDecryptor(secret, bytes(raw[:got]))
    sealed_full = dec.header.chunk_size + CHUNK_OVERHEAD

    def open_(index: int, sealed: memoryview, final: bool, out: memoryview, _iv: bytes) -> int:
        return dec.open_chunk_into(index, sealed, final, out)

    digest = hashlib.sha256() if hash_plaintext else None
    tags = TagsDigest(dec.header.raw)
    output = _Output(dst, progress, plaintext_out=True)
    count = _workers(workers)
    with OrderedPipeline(
        workers=count,
        depth=_depth(count, sealed_full),
        in_len=sealed_full,
        out_len=sealed_full,
        deliver=output,
        beside=digest.update if digest is not None else None,
        name="distsync-decrypt",
    ) as pipe:
        read = _feed_in_order(src, pipe, sealed_full, open_, tags=tags)
        pipe.join()
    sha256 = digest.hexdigest() if digest is not None else None
    return StreamResult(output.written, HEADER_LEN + read, sha256, tags.hexdigest())


def chunks_in(object_size: int, chunk_size: int) -> int:
    """How many chunks a v3 object of ``object_size`` bytes holds; FormatError if none can."""
    plaintext_size_from_ciphertext(object_size, chunk_size)  # rejects impossible sizes
    full, last = divmod(object_size - HEADER_LEN, chunk_size + CHUNK_OVERHEAD)
    return full + (1 if last else 0)


def decrypt_ranges(
    dec: StreamDecryptor,
    read: Callable[[int, int], bytes],
    object_size: int,
    dst: BinaryIO,
    *,
    first_chunk: int = 0,
    digest: Callable[[memoryview], object] | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int = 4,
    check: Callable[[], None] | None = None,
    batch_bytes: int = 4 << 20,
    tags: TagsDigest | None = None,
) -> int:
    """Verify and decrypt chunks ``first_chunk``... of an object read by ranges into ``dst``.

    ``read(offset, length)`` returns those bytes of the object (a ranged GET, or a file that
    fills as a swarm downloads it); it is called from ``workers`` threads at once, for batches
    of whole chunks of about ``batch_bytes``, each batch opened by the thread that read it. So
    network, AES, HMAC and the disk overlap, and one batch at a time per worker is in memory
    besides ``workers + 2`` reused plaintext buffers. Batches are written to ``dst`` strictly
    in order, each after all its chunks verified, and the plaintext goes to ``digest`` (a
    hash's ``update``) in order, beside the workers. ``check()`` runs before each batch is
    read and may raise to stop. ``tags`` gets every chunk's tag, in order. Returns the
    plaintext bytes written; after an error ``dst`` holds a prefix of unverified provenance:
    write into a temporary file.
    """
    chunk = dec.header.chunk_size
    sealed_full = chunk + CHUNK_OVERHEAD
    count = chunks_in(object_size, chunk)
    per_batch = max(1, batch_bytes // sealed_full)
    batch_tags: dict[int, bytes] = {}  # first chunk -> its batch's tags, until delivered

    def open_batch(first: int, last: int, slot: Slot) -> int:
        if check is not None:
            check()
        start = dec.chunk_offset(first)
        end = object_size if last == count - 1 else dec.chunk_offset(last + 1)
        data = memoryview(read(start, end - start))
        if len(data) != end - start:
            raise IntegrityError(
                f"truncated: reading chunks {first} to {last} gave {len(data)} of "
                f"{end - start} bytes"
            )
        filled = 0
        for n, index in enumerate(range(first, last + 1)):
            piece = data[n * sealed_full : (n + 1) * sealed_full]
            filled += dec.open_chunk_into(index, piece, index == count - 1, slot.outbuf[filled:])
        if tags is not None:  # each chunk ends with its tag; all but the last are full
            batch_tags[first] = b"".join(
                data[end - CHUNK_TAG_LEN : end]
                for end in (*range(sealed_full, len(data), sealed_full), len(data))
            )
        return filled

    output = _Output(dst, progress, plaintext_out=True)

    def deliver(data: memoryview, first: int) -> None:
        output(data, 0)
        if tags is not None:
            tags.add(batch_tags.pop(first))

    workers = max(1, workers)
    with OrderedPipeline(
        workers=workers,
        depth=workers + 2,
        in_len=0,  # each job reads its own batch
        out_len=per_batch * sealed_full,
        deliver=deliver,
        beside=digest,
        name="distsync-fetch",
    ) as pipe:
        for first in range(first_chunk, count, per_batch):
            last = min(first + per_batch, count) - 1
            task = functools.partial(open_batch, first, last)
            pipe.submit(pipe.next_slot(), task, size_in=0, tag=first)
        pipe.join()
    return output.written
