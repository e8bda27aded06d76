"""A Store that counts what passes through it: requests per operation and bytes read.

The daemon wraps its store in one, so its metrics and status record can say how many
requests it makes and how many bytes came from the store itself (the "back-to-source"
figure) rather than from peers. Counting is all it adds; every call goes to the real store.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from distsync.storage.base import SMALL_OBJECT_LIMIT, ObjectWriter, Store, StoredObject

__all__ = ["CountingStore"]


class CountingStore:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.description = inner.description
        self.requests: Counter[str] = Counter()
        self.bytes_read = 0
        self._lock = threading.Lock()

    def _count(self, operation: str) -> None:
        with self._lock:
            self.requests[operation] += 1

    def _read(self, data: bytes) -> bytes:
        with self._lock:
            self.bytes_read += len(data)
        return data

    def create(self, key: str, data: bytes) -> bool:
        self._count("create")
        return self.inner.create(key, data)

    def put(self, key: str, data: bytes) -> None:
        self._count("put")
        self.inner.put(key, data)

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)

    def writer(self, key: str) -> ObjectWriter:
        self._count("write")
        return self.inner.writer(key)

    def get(self, key: str, *, limit: int = SMALL_OBJECT_LIMIT) -> bytes:
        self._count("get")
        return self._read(self.inner.get(key, limit=limit))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self._count("get_range")
        return self._read(self.inner.get_range(key, start, length))

    def size(self, key: str) -> int:
        self._count("size")
        return self.inner.size(key)

    def changed(self, key: str, since: str | None) -> str | None:
        self._count("changed")
        return self.inner.changed(key, since)

    def list_after(self, prefix: str, start_after: str) -> Iterator[str]:
        self._count("list")
        yield from self.inner.list_after(prefix, start_after)

    def inventory(self, prefix: str) -> Iterator[StoredObject]:
        self._count("list")
        yield from self.inner.inventory(prefix)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        # Optional capabilities of the real store (presign for the BitTorrent web seed).
        return getattr(self.inner, name)
