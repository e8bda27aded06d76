"""The parallel pipeline behind encrypt, decrypt, upload and fetch (transfer/parallel.py and
stream.decrypt_ranges): order, bounds, the first failure wins, nothing after a failure is
written, and stopping leaves no job running.

The security tests of the format itself (flips, truncation, reorder, splice) are in
test_stream.py and run through the same pipeline; these add what parallelism could break:
later chunks that verify *before* an earlier bad one, workers that fail, a stop mid-way.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable

import pytest
from distsync.crypto import stream
from distsync.errors import IntegrityError, StorageError
from distsync.transfer.parallel import OrderedPipeline, Slot

SECRET = bytes(range(32))
C = stream.MIN_CHUNK_SIZE
WAIT = 10.0  # generous bound for every wait on another thread: never hit unless broken


def pattern(size: int, seed: int = 0) -> bytes:
    return bytes((j * 13 + seed) % 251 for j in range(size))


def encrypt(plaintext: bytes) -> bytes:
    out = io.BytesIO()
    stream.encrypt_stream(SECRET, io.BytesIO(plaintext), out, chunk_size=C, workers=2)
    return out.getvalue()


def tampered(obj: bytes, chunk: int) -> bytes:
    damaged = bytearray(obj)
    damaged[stream.HEADER_LEN + chunk * (C + 48) + 100] ^= 1
    return bytes(damaged)


def copy_job(value: bytes, before: Callable[[], None] = lambda: None) -> Callable[[Slot], int]:
    def job(slot: Slot) -> int:
        before()
        slot.outbuf[: len(value)] = value
        return len(value)

    return job


# --- OrderedPipeline --------------------------------------------------------------------------


def test_outputs_leave_in_submission_order_whatever_order_jobs_finish() -> None:
    delivered: list[bytes] = []

    def deliver(out: memoryview, _tag: int) -> None:
        delivered.append(bytes(out))

    with OrderedPipeline(workers=4, depth=6, in_len=0, out_len=8, deliver=deliver) as pipe:
        for i in range(40):
            # Early units are the slow ones, so later ones finish first.
            pause = 0.004 * (3 - i % 4)
            pipe.submit(pipe.next_slot(), copy_job(b"%03d" % i, lambda p=pause: time.sleep(p)),
                        size_in=0, tag=i)  # fmt: skip
        pipe.join()
    assert delivered == [b"%03d" % i for i in range(40)]


def test_nothing_after_a_failing_unit_is_delivered_even_if_it_finished_first() -> None:
    delivered: list[int] = []
    later_done = threading.Event()
    failure = ValueError("chunk 5 is bad")

    def fail_after_later_units() -> None:
        assert later_done.wait(WAIT), "units after the failing one never ran"
        raise failure

    def job(i: int) -> Callable[[Slot], int]:
        if i == 5:
            return copy_job(b"", fail_after_later_units)
        if i == 7:
            return copy_job(b"x", later_done.set)
        return copy_job(b"x")

    with pytest.raises(ValueError) as caught, OrderedPipeline(
        workers=4, depth=10, in_len=0, out_len=1, deliver=lambda _out, tag: delivered.append(tag)
    ) as pipe:
        for i in range(10):
            pipe.submit(pipe.next_slot(), job(i), size_in=0, tag=i)
        pipe.join()
    assert caught.value is failure  # surfaces unchanged: the one-line error of the worker
    assert later_done.is_set()
    assert delivered == [0, 1, 2, 3, 4]


def test_a_failing_delivery_stops_the_pipeline() -> None:
    delivered: list[int] = []

    def deliver(_out: memoryview, tag: int) -> None:
        if tag == 3:
            raise OSError(28, "No space left on device")
        delivered.append(tag)

    with pytest.raises(OSError, match="No space"), OrderedPipeline(
        workers=2, depth=4, in_len=0, out_len=1, deliver=deliver
    ) as pipe:
        for i in range(50):
            pipe.submit(pipe.next_slot(), copy_job(b"x"), size_in=0, tag=i)
        pipe.join()
    assert delivered == [0, 1, 2]


def test_a_slow_consumer_holds_the_producer_to_depth_units() -> None:
    submitted = delivered = most = 0

    def deliver(_out: memoryview, _tag: int) -> None:
        nonlocal delivered
        time.sleep(0.002)
        delivered += 1

    with OrderedPipeline(workers=3, depth=5, in_len=4, out_len=4, deliver=deliver) as pipe:
        for _ in range(60):
            slot = pipe.next_slot()
            most = max(most, submitted - delivered)
            pipe.submit(slot, copy_job(b"abcd"), size_in=4, tag=0)
            submitted += 1
        pipe.join()
    assert delivered == 60
    assert most <= 5  # never more units in memory than slots


@pytest.mark.parametrize("beside_input", [True, False])
def test_the_digest_sees_inputs_or_verified_outputs_in_order(beside_input: bool) -> None:
    seen: list[bytes] = []
    with pytest.raises(IntegrityError), OrderedPipeline(
        workers=3,
        depth=4,
        in_len=2,
        out_len=2,
        deliver=lambda _out, _tag: None,
        beside=lambda data: seen.append(bytes(data)),
        beside_input=beside_input,
    ) as pipe:
        for i in range(12):
            slot = pipe.next_slot()
            slot.inbuf[:2] = b"i%d" % (i % 10)

            def job(s: Slot, i: int = i) -> int:
                if i == 8:
                    raise IntegrityError("chunk 8 failed authentication")
                s.outbuf[:2] = b"o%d" % i
                return 2

            pipe.submit(slot, job, size_in=2, tag=i)
        pipe.join()
    if beside_input:
        assert seen[:9] == [b"i%d" % i for i in range(9)]  # hashed as read, failure or not
    else:
        assert seen == [b"o%d" % i for i in range(8)]  # only what verified, nothing after


def test_leaving_early_drops_queued_jobs_and_waits_for_running_ones() -> None:
    started: list[int] = []
    finished: list[int] = []
    release = threading.Event()

    def job(i: int) -> Callable[[Slot], int]:
        def run(slot: Slot) -> int:
            started.append(i)
            assert release.wait(WAIT)
            finished.append(i)
            return 0

        return run

    timer = threading.Timer(0.2, release.set)
    with pytest.raises(KeyboardInterrupt), OrderedPipeline(
        workers=1, depth=8, in_len=0, out_len=0, deliver=lambda _out, _tag: None
    ) as pipe:
        for i in range(6):
            pipe.submit(pipe.next_slot(), job(i), size_in=0, tag=i)
        timer.start()
        raise KeyboardInterrupt  # e.g. Ctrl-C while the first job runs
    timer.join()
    assert started == finished == [0]  # the running job ended before the buffers were let go


# --- decrypt_stream: a bad chunk among chunks that verify first ---------------------------------


class SlowSink(io.RawIOBase):
    """A destination slow enough that every worker runs far ahead of the writer."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        time.sleep(0.003)
        view = memoryview(data)  # type: ignore[arg-type]
        self.data += view
        return len(view)


@pytest.mark.parametrize("bad", [1, 9, 23])
def test_a_tampered_chunk_among_parallel_chunks_stops_the_output_before_it(bad: int) -> None:
    plain = pattern(24 * C + 333, seed=bad)
    sink = SlowSink()
    with pytest.raises(IntegrityError, match=f"chunk {bad} failed authentication"):
        stream.decrypt_stream(SECRET, io.BytesIO(tampered(encrypt(plain), bad)), sink, workers=4)
    assert bytes(sink.data) == plain[: bad * C]


# --- decrypt_ranges: the fetch side ----------------------------------------------------------


class Ranges:
    """An object read by ranges, the way fetch reads a store: early ranges answer slowest, and
    one range may fail or come back short."""

    def __init__(self, obj: bytes, *, fail_at: int | None = None, short_at: int | None = None):
        self.obj = obj
        self.fail_at = fail_at
        self.short_at = short_at
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, start: int, length: int) -> bytes:
        with self.lock:
            self.calls.append(start)
            nth = len(self.calls)
        time.sleep(0.004 * max(0, 4 - nth % 5))
        if start == self.fail_at:
            raise StorageError(f"S3 bucket b: cannot read k: InternalError (HTTP 500) at {start}")
        data = self.obj[start : start + length]
        return data[:-1] if start == self.short_at else data


def ranges_decrypt(
    obj: bytes, source: Ranges, first_chunk: int = 0, **kw: object
) -> tuple[bytes, hashlib._Hash, int]:
    dec = stream.StreamDecryptor(SECRET, obj[:64])
    out = io.BytesIO()
    digest = hashlib.sha256()
    written = stream.decrypt_ranges(
        dec, source, len(obj), out, first_chunk=first_chunk, digest=digest.update, **kw  # type: ignore[arg-type]
    )
    assert written == len(out.getvalue())
    return out.getvalue(), digest, written


@pytest.mark.parametrize("batch_chunks", [1, 3, 50])
@pytest.mark.parametrize("size", [0, 1, C, 7 * C, 10 * C + 17])
def test_ranged_decryption_round_trips_in_order(batch_chunks: int, size: int) -> None:
    plain = pattern(size, seed=size % 7)
    obj = encrypt(plain)
    batch = batch_chunks * (C + 48)
    back, digest, _n = ranges_decrypt(obj, Ranges(obj), workers=4, batch_bytes=batch)
    assert back == plain
    assert digest.hexdigest() == hashlib.sha256(plain).hexdigest()


def tags_of(obj: bytes) -> str:
    """The digest of the header and chunk tags, from the object's bytes alone."""
    digest = hashlib.sha256(obj[: stream.HEADER_LEN])
    for start in range(stream.HEADER_LEN, len(obj), C + 48):
        sealed = obj[start : start + C + 48]
        digest.update(sealed[-16:])
    return digest.hexdigest()


@pytest.mark.parametrize("batch_chunks", [1, 3, 50])
@pytest.mark.parametrize("size", [0, 1, C, 7 * C, 10 * C + 17])
def test_the_tags_digest_is_the_same_sealing_and_opening(batch_chunks: int, size: int) -> None:
    plain = pattern(size, seed=3)
    out = io.BytesIO()
    sealed = stream.encrypt_stream(SECRET, io.BytesIO(plain), out, chunk_size=C, workers=2)
    obj = out.getvalue()
    assert sealed.tags_sha256 == tags_of(obj)

    dec = stream.StreamDecryptor(SECRET, obj[:64])
    opened = stream.TagsDigest(obj[:64])
    stream.decrypt_ranges(
        dec,
        Ranges(obj),
        len(obj),
        io.BytesIO(),
        tags=opened,
        workers=4,
        batch_bytes=batch_chunks * (C + 48),
    )
    assert opened.hexdigest() == sealed.tags_sha256


def test_other_content_under_the_same_header_has_other_tags() -> None:
    """What a holder of the secret can make (the header is public, the salt in it): other
    chunks under the same header verify, and the tags digest tells them apart."""
    plain = pattern(3 * C + 1)
    enc = stream.StreamEncryptor(SECRET, C)
    first = stream.encrypt_with(enc, io.BytesIO(plain), io.BytesIO())
    again = stream.StreamEncryptor(SECRET, C, salt=enc.header.salt)
    assert again.header.raw == enc.header.raw
    other = stream.encrypt_with(again, io.BytesIO(plain[:-1] + b"!"), io.BytesIO())
    assert other.tags_sha256 != first.tags_sha256


def test_ranged_decryption_resumes_after_the_kept_chunks() -> None:
    plain = pattern(9 * C + 5)
    obj = encrypt(plain)
    source = Ranges(obj)
    back, _digest, written = ranges_decrypt(obj, source, first_chunk=4, workers=3)
    assert back == plain[4 * C :] and written == len(plain) - 4 * C
    assert min(source.calls) == stream.HEADER_LEN + 4 * (C + 48)  # kept chunks not read again


@pytest.mark.parametrize("bad", [0, 4, 5, 11])
def test_a_tampered_chunk_in_a_ranged_batch_is_rejected_with_nothing_after_it(bad: int) -> None:
    plain = pattern(12 * C + 99)
    obj = tampered(encrypt(plain), bad)
    out = io.BytesIO()
    digest = hashlib.sha256()
    with pytest.raises(IntegrityError, match=f"chunk {bad} failed authentication"):
        stream.decrypt_ranges(
            stream.StreamDecryptor(SECRET, obj[:64]), Ranges(obj), len(obj), out,
            digest=digest.update, workers=4, batch_bytes=3 * (C + 48),
        )  # fmt: skip
    # Batches of three chunks: whole batches before the bad one, nothing of its own batch.
    assert out.getvalue() == plain[: bad // 3 * 3 * C]
    assert digest.hexdigest() == hashlib.sha256(out.getvalue()).hexdigest()


def test_a_failing_read_in_a_worker_surfaces_unchanged() -> None:
    obj = encrypt(pattern(12 * C))
    fail_at = stream.HEADER_LEN + 6 * (C + 48)
    with pytest.raises(StorageError, match=r"^S3 bucket b: cannot read k: InternalError"):
        ranges_decrypt(obj, Ranges(obj, fail_at=fail_at), workers=4, batch_bytes=2 * (C + 48))


def test_a_short_read_is_a_truncation() -> None:
    obj = encrypt(pattern(6 * C))
    with pytest.raises(IntegrityError, match="truncated"):
        ranges_decrypt(obj, Ranges(obj, short_at=stream.HEADER_LEN + 2 * (C + 48)), workers=2,
                       batch_bytes=C + 48)  # fmt: skip


def test_a_stop_request_ends_the_reads_and_propagates() -> None:
    obj = encrypt(pattern(40 * C))
    source = Ranges(obj)

    class Stop(Exception):
        pass

    def check() -> None:
        if len(source.calls) >= 5:
            raise Stop

    with pytest.raises(Stop):
        ranges_decrypt(obj, source, workers=1, check=check, batch_bytes=C + 48)
    time.sleep(0.1)
    assert len(source.calls) == 5  # not one read after the stop, none still running


def test_impossible_object_sizes_are_format_errors() -> None:
    obj = encrypt(pattern(3 * C))
    dec = stream.StreamDecryptor(SECRET, obj[:64])
    for size in (64, 64 + 47, len(obj) + 1):
        with pytest.raises(IntegrityError):
            stream.decrypt_ranges(dec, Ranges(obj), size, io.BytesIO())
