"""One node's share of the store reads for one artifact (``plan.share_of``), then help.

Each piece is one ranged GET, handed to libtorrent with ``add_piece``, which checks it against
the manifest's piece hash before it counts or is served. A piece a peer already has is not
read: S3 egress is the cost that matters. With its share done, the reader helps readers that
fall behind or died (``plan.HelpPlan``) until nothing is left unclaimed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from distsync.errors import DistsyncError, IntegrityError
from distsync.storage.base import Store
from distsync.swarm.meta import TorrentMeta
from distsync.swarm.plan import HelpPlan, unclaimed
from distsync.threads import interruptible
from distsync.transfer.fetch import Interrupted

__all__ = ["ShareReader"]

log = logging.getLogger("distsync.swarm")

_IDLE = 0.1  # seconds between looks when there is nothing to help with yet


class ShareReader:
    """The body of an ``OwnedThread``: ``run(cancelled)`` returns how many pieces of other
    readers' shares it read. A store failure ends it with a warning (the others and the web
    seed cover its pieces); anything libtorrent raises is left to the owner."""

    def __init__(
        self,
        store: Store,
        key: str,
        meta: TorrentMeta,
        share: range,
        handle: Any,
        query_pieces: int,
    ) -> None:
        self._store = store
        self._key = key
        self._meta = meta
        self._share = share
        self._handle = handle
        self._query_pieces = query_pieces  # libtorrent's status flag for the have-bitfield

    def run(self, cancelled: threading.Event) -> int:
        store = interruptible(self._store, cancelled.is_set)
        helped = 0
        try:
            # One request at a time: pieces then land at an even pace, which the swarm
            # forwards best (two in flight measured 5-10 % slower and read more twice).
            for piece in self._share:
                self._read(store, piece)
            if self._share.step > 1:
                helped = self._help(store, cancelled)
        except Interrupted:
            pass
        except DistsyncError as exc:
            log.warning("stopped reading this node's share of %s: %s", self._key, exc)
        return helped

    def _read(self, store: Store, piece: int) -> bool:
        """Read ``piece`` from the store unless a peer already has it; True if read."""
        if self._handle.have_piece(piece) or self._available()[piece]:
            return False  # a peer has it (another reader took it): no S3 read
        start = piece * self._meta.piece_length
        length = min(self._meta.piece_length, self._meta.length - start)
        data = store.get_range(self._key, start, length)
        if len(data) != length:
            raise IntegrityError(f"{self._key} is shorter than its torrent says")
        self._handle.add_piece(piece, data, 0)
        return True

    def _available(self) -> list[int]:
        """How many peers have each piece (libtorrent answers [] once we have them all)."""
        counts = list(self._handle.piece_availability())
        return counts + [0] * (self._meta.piece_count - len(counts))

    def _help(self, store: Store, cancelled: threading.Event) -> int:
        """With our share read, read pieces of readers that fall behind (``HelpPlan``).

        Shares are equal but links are not, so the S3 link would otherwise idle at the end
        while the slowest readers finish; this also covers a reader that died.
        """
        helped = 0
        plan = HelpPlan(self._share.step, self._share.start, time.monotonic())
        handle = self._handle
        while not cancelled.is_set():
            count = self._meta.piece_count
            have = list(handle.status(self._query_pieces).pieces)  # one call, not one a piece
            have += [False] * (count - len(have))
            queued = (block["piece_index"] for block in handle.get_download_queue())
            missing = unclaimed(count, self._available(), queued, have.__getitem__)
            if not missing:
                break
            piece = plan.next(missing, time.monotonic())
            if piece is None:
                cancelled.wait(_IDLE)
            elif self._read(store, piece):
                helped += 1
        return helped
