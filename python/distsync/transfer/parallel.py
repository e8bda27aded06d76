"""Bounded, ordered parallelism: the engine's two ways of spreading work over threads.

``ordered_map`` runs a function over items and yields the results in order (small reads).
``OrderedPipeline`` is the one pipeline behind every large transfer (encrypt, decrypt, upload,
fetch): units of work live in a fixed ring of reusable buffers, run on a pool, and leave in
order through a single delivering thread, with a digest beside them on a thread of its own.
Neither knows anything of cryptography; ``distsync.crypto.stream`` builds on them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["OrderedPipeline", "Slot", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, inflight: int | None = None
) -> Iterator[R]:
    """Yield ``fn(item)`` in input order, running up to ``workers`` calls at once.

    Memory stays bounded by ``inflight`` results. If the consumer stops early or a call
    raises, pending calls are cancelled before the exception propagates.
    """
    limit = max(inflight or 2 * workers, 1)
    if workers <= 1:
        yield from map(fn, items)
        return
    pending: deque[Future[R]] = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="distsync-io") as pool:
        try:
            for item in source:
                pending.append(pool.submit(fn, item))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class Slot:
    """The reusable buffers of one unit of work in flight: allocating (and page-faulting) fresh
    buffers per unit costs more than AES itself. ``inbuf`` may be empty (a job that fetches its
    own input)."""

    __slots__ = ("_busy", "inbuf", "outbuf")

    def __init__(self, in_len: int, out_len: int) -> None:
        self.inbuf = memoryview(bytearray(in_len))
        self.outbuf = memoryview(bytearray(out_len))
        self._busy: list[Future[None]] = []  # what still reads or writes the buffers


# deliver(output, tag): the output of one unit and the tag it was submitted with.
Deliver = Callable[[memoryview, int], None]


class OrderedPipeline:
    """Run jobs on ``workers`` threads and deliver their outputs in submission order.

    The calling thread takes slots in order (``next_slot``), fills their input and submits a
    job per slot; a job writes into ``slot.outbuf`` and returns how many bytes it wrote. One
    thread calls ``deliver`` with each output, strictly in order; ``beside`` (a digest's
    ``update``) sees, in order on a thread of its own, either each unit's input as it is
    submitted (``beside_input=True``) or each output once its job has succeeded. A slot comes
    round again only when its previous unit is delivered and digested, so ``depth`` slots bound
    the memory whatever the size of the stream, and the caller blocks when it runs ahead.

    The first failure (a job, ``deliver`` or ``beside``) wins: nothing submitted after the
    failing unit is delivered, ``next_slot``/``submit``/``join`` raise it unchanged, and leaving
    the ``with`` block cancels queued jobs and waits for running ones (they use the buffers).
    """

    def __init__(
        self,
        *,
        workers: int,
        depth: int,
        in_len: int,
        out_len: int,
        deliver: Deliver,
        beside: Callable[[memoryview], object] | None = None,
        beside_input: bool = False,
        name: str = "distsync-pipe",
    ) -> None:
        if workers < 1 or depth < 2:
            raise ValueError("a pipeline needs at least one worker and two slots")
        self._slots = [Slot(in_len, out_len) for _unused in range(depth)]
        self._next = 0
        self._deliver = deliver
        self._beside = beside
        self._beside_input = beside_input
        self._failures: list[BaseException] = []
        self._pool = ThreadPoolExecutor(workers, f"{name}-work")
        self._writer = ThreadPoolExecutor(1, f"{name}-deliver")
        self._side = ThreadPoolExecutor(1, f"{name}-beside")

    def __enter__(self) -> OrderedPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_slot(self) -> Slot:
        """The next slot of the ring, once nothing uses it any more. Submit slots in the order
        they were taken (taking one ahead, e.g. to look for the end of the input, is fine)."""
        self._raise_failure()
        slot = self._slots[self._next % len(self._slots)]
        self._next += 1
        while slot._busy:
            slot._busy.pop(0).result()
        self._raise_failure()
        return slot

    def submit(self, slot: Slot, job: Callable[[Slot], int], *, size_in: int, tag: int) -> None:
        """Run ``job(slot)`` on the pool; ``slot.inbuf[:size_in]`` is the unit's input (given to
        ``beside`` when ``beside_input``); ``tag`` is passed to ``deliver`` with the output."""
        self._raise_failure()
        if self._beside is not None and self._beside_input:
            slot._busy.append(self._side.submit(self._digest, slot.inbuf[:size_in]))
        result = self._pool.submit(job, slot)
        slot._busy.append(self._writer.submit(self._retire, slot, result, tag))

    def _retire(self, slot: Slot, result: Future[int], tag: int) -> None:
        if self._failures:
            return  # an earlier unit failed: deliver nothing after it
        try:
            out = slot.outbuf[: result.result()]
            if self._beside is not None and not self._beside_input:
                slot._busy.append(self._side.submit(self._digest, out))
            self._deliver(out, tag)
        except BaseException as exc:
            self._failures.append(exc)

    def _digest(self, data: memoryview) -> None:
        try:
            if self._beside is not None:
                self._beside(data)
        except BaseException as exc:
            self._failures.append(exc)

    def join(self) -> None:
        """Wait until everything submitted is delivered and digested; raise the first failure."""
        # Both executors are FIFO: once a no-op has run, everything submitted before it has.
        self._writer.submit(int).result()
        self._side.submit(int).result()
        self._raise_failure()

    def close(self) -> None:
        """Drop queued jobs and wait for running ones; idempotent."""
        for executor in (self._pool, self._writer, self._side):
            executor.shutdown(wait=True, cancel_futures=True)

    def _raise_failure(self) -> None:
        if self._failures:
            raise self._failures[0]
