"""Threads with one owner each, and store calls that a stop request need not wait for.

Every thread distsync starts has exactly one owner, which starts it, cancels it and joins it
before it tears down anything the thread uses (``OwnedThread``). That only works if no thread
can be stuck in a call that ignores cancellation, and the one such call is a request to a
store that does not answer: boto3's retries and backoff sleeps cannot be interrupted.
``InterruptibleStore`` therefore runs each store call on a short-lived thread of its own and
waits for whichever comes first, the answer or a stop request. The owned thread returns
promptly (``Interrupted``); the call left behind touches nothing but the store client, and
its answer is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, Generic, TypeVar

from distsync.storage.base import ObjectWriter, Store
from distsync.transfer.fetch import Interrupted

__all__ = ["InterruptibleStore", "OwnedThread", "interruptible"]

T = TypeVar("T")

_POLL = 0.05  # seconds between looks at the stop request while a store call runs
_LIST_BATCH = 1000  # keys fetched per call while listing (one S3 LIST page)


class OwnedThread(Generic[T]):
    """A thread with one owner: it starts it, cancels it (``cancel``), and joins it.

    The target gets the cancel Event and must return soon after it is set: every wait in it
    is an Event wait, a bounded sleep or an interruptible store call. What it returns or raises
    is kept for the owner (``result``), so nothing escapes as an unhandled thread exception.
    """

    def __init__(self, name: str, target: Callable[[threading.Event], T]) -> None:
        self.cancelled = threading.Event()
        self._target = target
        self._outcome: tuple[bool, Any] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> OwnedThread[T]:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._outcome = (True, self._target(self.cancelled))
        except BaseException as exc:  # handed to the owner by result()
            self._outcome = (False, exc)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def failure(self) -> BaseException | None:
        """What the target raised, once it has (None while it runs or if it returned)."""
        outcome = self._outcome
        return outcome[1] if outcome is not None and not outcome[0] else None

    def cancel(self) -> None:
        self.cancelled.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once the thread has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float) -> bool:
        """Cancel and join; True once the thread has ended."""
        self.cancel()
        return self.join(timeout)

    def result(self) -> T:
        """What the target returned; re-raises what it raised. Only after it ended."""
        if self._outcome is None:
            raise RuntimeError(f"{self._thread.name} has not finished")
        ok, value = self._outcome
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


def _call(
    should_stop: Callable[[], bool], what: str, fn: Callable[..., T], *args: Any, **kw: Any
) -> T:
    """``fn(*args, **kw)`` on a thread of its own; Interrupted as soon as ``should_stop()``."""
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, fn(*args, **kw)))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="distsync-store-call", daemon=True).start()
    while not done.wait(_POLL):
        if should_stop():
            raise Interrupted(f"stopped while waiting for {what}")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


class InterruptibleStore:
    """A Store whose calls give up with Interrupted once ``should_stop()`` says so.

    ``on_answer`` is called whenever the store answers (data or an error): proof that the
    work moves, for the systemd watchdog. Writing large objects is passed through as it is:
    only the uploader does that, and it has no stop request to honour.
    """

    def __init__(
        self,
        store: Store,
        should_stop: Callable[[], bool],
        *,
        on_answer: Callable[[], None] = lambda: None,
    ) -> None:
        self.inner = store
        self.description = store.description
        self._should_stop = should_stop
        self._on_answer = on_answer

    def _ask(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        if self._should_stop():
            raise Interrupted(f"stopped before asking {self.description}")
        try:
            value = _call(self._should_stop, self.description, fn, *args, **kw)
        except Interrupted:
            raise
        except BaseException:
            self._on_answer()  # an error is an answer too: the store is not stuck
            raise
        self._on_answer()
        return value

    def create(self, key: str, data: bytes) -> bool:
        return self._ask(self.inner.create, key, data)

    def put(self, key: str, data: bytes) -> None:
        self._ask(self.inner.put, key, data)

    def delete(self, key: str) -> None:
        self._ask(self.inner.delete, key)

    def writer(self, key: str) -> ObjectWriter:
        return self.inner.writer(key)

    def get(self, key: str, *args: Any, **kw: Any) -> bytes:
        return self._ask(self.inner.get, key, *args, **kw)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._ask(self.inner.get_range, key, start, length)

    def size(self, key: str) -> int:
        return self._ask(self.inner.size, key)

    def changed(self, key: str, since: str | None) -> str | None:
        return self._ask(self.inner.changed, key, since)

    def list_after(self, prefix: str, start_after: str) -> Iterator[str]:
        keys = self.inner.list_after(prefix, start_after)
        while batch := self._ask(lambda: list(islice(keys, _LIST_BATCH))):
            yield from batch


def interruptible(store: Store, should_stop: Callable[[], bool]) -> InterruptibleStore:
    """``store``, whose calls also give up once ``should_stop()``; an InterruptibleStore
    gets a second condition, not a second layer of threads."""
    if isinstance(store, InterruptibleStore):
        outer = store._should_stop
        return InterruptibleStore(
            store.inner, lambda: should_stop() or outer(), on_answer=store._on_answer
        )
    return InterruptibleStore(store, should_stop)
