"""An ordered, bounded parallel map: at most ``inflight`` results exist at once."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

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
