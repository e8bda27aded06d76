"""A large object written as parts uploaded in parallel from a bounded set of buffers.

S3's multipart uploads and Swift's Static Large Objects stream the same way; only the
requests differ. ``PartWriter`` holds what they share: ``write`` copies into the current
part's buffer (callers may reuse theirs); full parts go to a thread pool; at most ``budget``
buffers exist at once (one filling, the rest queued or uploading), so a writer that outpaces
the network blocks instead of growing. The first failure of any part stops the rest and is
raised by the next ``write`` or ``commit``, which abort: a subclass's ``_discard`` removes
what was uploaded. An object smaller than one part is a single PUT (``_put_whole``).
"""

from __future__ import annotations

import queue
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from distsync.errors import StorageError

__all__ = ["PartWriter"]


class PartWriter(ABC):
    noun = "parts"  # in messages: "needs more than 10000 parts"

    def __init__(
        self,
        *,
        description: str,
        key: str,
        workers: int,
        base_size: int,
        size_for: Callable[[int, int], int],
        max_parts: int,
        error: Callable[[str, str, BaseException], StorageError],
        thread_name: str,
    ) -> None:
        self._description = description
        self._key = key
        self._workers = workers
        self._base_size = base_size
        self._size_for = size_for  # (part number, base size) -> that part's size
        self._max_parts = max_parts
        self._error = error
        self._number = 1  # the next part's
        self._futures: list[Future[None]] = []
        self._failure: BaseException | None = None
        self._done = False
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._allocated = 0
        self._pool = ThreadPoolExecutor(workers, thread_name)
        self._buffer = self._take_buffer()
        self._filled = 0

    # -- what a store does ----------------------------------------------------------------

    def _begin(self) -> None:  # noqa: B027 - an optional hook, empty unless overridden
        """Before the first part is sent (S3: start the multipart upload)."""

    @abstractmethod
    def _send_part(self, number: int, buf: bytearray, filled: int) -> None:
        """Upload ``buf[:filled]`` as part ``number`` and remember what ``_complete`` needs
        (runs on the pool; ``buf`` is handed back after it returns)."""

    @abstractmethod
    def _put_whole(self, data: memoryview) -> None:
        """An object smaller than one part: one PUT."""

    @abstractmethod
    def _complete(self) -> None:
        """Every part is uploaded: make the object visible at its key."""

    @abstractmethod
    def _discard(self) -> None:
        """After a failure or ``abort``: remove what was uploaded (log what remains)."""

    # -- the stream -----------------------------------------------------------------------

    def _budget(self, size: int) -> int:
        """Memory: (workers + 2) base-size parts, fewer as parts grow (never fewer than two)."""
        return max(2, (self._workers + 2) * self._base_size // size)

    def _take_buffer(self) -> bytearray:
        size = self._size_for(self._number, self._base_size)
        while True:
            try:
                buf = self._free.get_nowait()
            except queue.Empty:
                if self._allocated < self._budget(size):
                    self._allocated += 1
                    return bytearray(size)
                buf = self._free.get()  # a part in flight always hands one back
            if len(buf) == size:
                return buf
            self._allocated -= 1  # parts grew: let the smaller buffer go

    def write(self, data: bytes | memoryview) -> int:
        self._check()
        view = memoryview(data).cast("B")
        total = len(view)
        try:
            while len(view):
                n = min(len(self._buffer) - self._filled, len(view))
                self._buffer[self._filled : self._filled + n] = view[:n]
                self._filled += n
                view = view[n:]
                if self._filled == len(self._buffer):
                    self._ship(self._buffer, self._filled)
                    self._buffer = self._take_buffer()
                    self._filled = 0
                    self._check()
        except BaseException:
            self.abort()
            raise
        return total

    def _check(self) -> None:
        if self._done:
            raise StorageError(f"{self._description}: write to a finished upload")
        if self._failure is not None:
            failure = self._failure
            self.abort()
            if isinstance(failure, StorageError):
                raise failure
            raise self._error("upload", self._key, failure)

    def _ship(self, buf: bytearray, filled: int) -> None:
        if self._number > self._max_parts:
            raise StorageError(
                f"{self._description}: {self._key} needs more than {self._max_parts} "
                f"{self.noun}"
            )
        if not self._futures:
            self._begin()
        number = self._number
        self._number += 1
        self._futures.append(self._pool.submit(self._upload, number, buf, filled))

    def _upload(self, number: int, buf: bytearray, filled: int) -> None:
        try:
            if self._failure is None:  # after a failure, parts not yet started are skipped
                self._send_part(number, buf, filled)
        except BaseException as exc:
            if self._failure is None:
                self._failure = exc
        finally:
            self._free.put(buf)

    def commit(self) -> None:
        self._check()
        try:
            if not self._futures:
                self._put_whole(memoryview(self._buffer)[: self._filled])
            else:
                if self._filled:
                    self._ship(self._buffer, self._filled)
                for future in self._futures:
                    future.result()
                self._check()
                self._complete()
        except BaseException:
            self.abort()
            raise
        self._finish()

    def abort(self) -> None:
        if self._done:
            return
        if self._failure is None:
            self._failure = StorageError("aborted")
        self._finish()
        self._discard()

    def _finish(self) -> None:
        self._done = True
        # Wait for parts in flight: one landing after the clean-up would linger.
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._buffer = bytearray()
