"""Reading and writing status records in the store.

Reading scales with the fleet: one listing of ``{prefix}status/`` (1,000 keys per request on
S3) and one GET per record, ``workers`` at a time (``ordered_map``: bounded memory), at most
``limit`` records. A record that fails verification or is malformed is skipped with a
warning, at most once per key and ``WARN_EVERY`` seconds, so a poisoned bucket cannot flood a
log that reads it every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from distsync.config import Config
from distsync.errors import DistsyncError, IntegrityError, NotFoundError
from distsync.node import is_node_id
from distsync.status.fleet import FleetView
from distsync.status.record import (
    STATUS_DIR,
    STATUS_RECORD,
    ServerStatus,
    open_status,
    seal_status,
)
from distsync.storage.base import Store
from distsync.transfer.parallel import ordered_map

__all__ = ["DEFAULT_LIMIT", "StatusBoard", "Throttle", "read_fleet"]

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 20_000
WARN_EVERY = 600.0
_WORKERS = 16


class Throttle:
    """Rate-limits warnings per subject (a key): one per ``every`` seconds."""

    def __init__(
        self, every: float = WARN_EVERY, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, subject: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(subject)
            if last is not None and now - last < self.every:
                return False
            if len(self._last) > 4 * DEFAULT_LIMIT:  # bounded memory however many subjects
                self._last.clear()
            self._last[subject] = now
            return True


class StatusBoard:
    def __init__(
        self,
        store: Store,
        prefix: str,
        secret: bytes,
        *,
        limit: int = DEFAULT_LIMIT,
        workers: int = _WORKERS,
        throttle: Throttle | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix + STATUS_DIR
        self.limit = limit
        self.workers = workers
        self.throttle = throttle or Throttle()
        self._secret = secret

    def key(self, node: str) -> str:
        return self.prefix + node

    def publish(self, status: ServerStatus) -> None:
        key = self.key(status.node)
        self.store.put(key, seal_status(self._secret, key, status))

    def node_ids(self) -> list[str]:
        """Every node with a record: one listing, no reads."""
        found = []
        for key in self.store.list_after(self.prefix, self.prefix):
            leaf = key[len(self.prefix) :]
            if is_node_id(leaf):
                found.append(leaf)
        return found

    def read_all(self) -> list[ServerStatus]:
        """Every genuine record (up to ``limit``); StorageError if the listing fails."""
        nodes = self.node_ids()
        if len(nodes) > self.limit:
            self._warn("limit", f"{len(nodes)} status records; only the first {self.limit} read")
            nodes = nodes[: self.limit]
        found = ordered_map(self._read, nodes, workers=self.workers)
        return [status for status in found if status is not None]

    def _read(self, node: str) -> ServerStatus | None:
        key = self.key(node)
        try:
            data = self.store.get(key, limit=STATUS_RECORD.max_size)
            return open_status(self._secret, key, data)
        except NotFoundError:
            return None  # expired by the lifecycle rule since the listing
        except IntegrityError as exc:
            self._warn(key, f"ignoring status record: {exc}")
        except DistsyncError as exc:
            self._warn(key, f"cannot read status record {key}: {exc}")
        return None

    def _warn(self, subject: str, message: str) -> None:
        if self.throttle.allow(subject):
            log.warning("%s", message)


def read_fleet(cfg: Config, store: Store) -> FleetView:
    """The fleet as its records in ``store`` say now (``distsync status``, the modules)."""
    records = StatusBoard(store, cfg.prefix, cfg.secret).read_all()
    return FleetView(records, time.time())
