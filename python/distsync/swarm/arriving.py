"""The swarm's copy of an artifact's ciphertext, read the way ``fetch_version`` reads a store.

``fetch_version`` reads ranges from a ``ChunkSource`` (a size and ranged reads). These are the
two sources the swarm gives it: a finished local file, and the file libtorrent is still
writing, whose ranges are handed out as soon as the pieces they touch are in and check out,
so decryption runs alongside the download instead of after it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from distsync.swarm.meta import TorrentMeta

__all__ = ["ArrivingCiphertext", "LocalCiphertext"]

_FIRST_PAUSE = 0.005
_LONGEST_PAUSE = 0.05  # the last pieces' wait adds straight to the install time


class LocalCiphertext:
    """Ciphertext in a local file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"local copy {path}"

    def size(self, key: str) -> int:
        return self.path.stat().st_size

    def get_range(self, key: str, start: int, length: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(start)
            return handle.read(length)


class ArrivingCiphertext(LocalCiphertext):
    """The swarm's copy while it downloads: a range is handed out once its pieces are in.

    A piece counts once libtorrent has it (``have``) *and* the file's bytes hash to the
    manifest's value: libtorrent may report a piece before its blocks reach the file, and this
    way nothing but the exact uploaded ciphertext ever reaches the chunk checks. ``check()``
    raises to abandon the wait (the swarm gave up, or a stop was requested).
    """

    def __init__(
        self,
        path: Path,
        meta: TorrentMeta,
        have: Callable[[int], bool],
        check: Callable[[], None],
    ) -> None:
        super().__init__(path)
        self.meta = meta
        self._have = have
        self._check = check
        self._ready: set[int] = set()
        self._lock = threading.Lock()  # fetch_version reads on several threads

    def size(self, key: str) -> int:
        return self.meta.length  # the file grows as pieces land; the torrent says how long

    def get_range(self, key: str, start: int, length: int) -> bytes:
        piece = self.meta.piece_length
        for index in range(start // piece, (start + max(length, 1) - 1) // piece + 1):
            self._wait(index)
        return super().get_range(key, start, length)

    def _wait(self, index: int) -> None:
        pause = _FIRST_PAUSE
        while True:
            with self._lock:
                if index in self._ready:
                    return
            self._check()
            if self._have(index) and self._hashes(index):
                with self._lock:
                    self._ready.add(index)
                return
            time.sleep(pause)
            pause = min(2 * pause, _LONGEST_PAUSE)

    def _hashes(self, index: int) -> bool:
        start = index * self.meta.piece_length
        try:
            data = LocalCiphertext.get_range(self, "", start, self.meta.piece_length)
        except FileNotFoundError:  # libtorrent may report a piece before its file exists
            return False
        expected = self.meta.pieces[20 * index : 20 * index + 20]
        return hashlib.sha1(data).digest() == expected
