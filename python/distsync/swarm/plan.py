"""Who does what in a swarm: pure decisions, fed with data and the time, no I/O.

Every node computes the same rendezvous order for an artifact's info-hash, so the fleet
agrees without talking: the first live nodes in that order read the pieces from the store
(``ReaderChoice``, ``share_of``), readers that finish early help slower ones (``helper_of``,
``HelpPlan``), and a node that makes no progress adds the web seed in waves by its place in
the order, then gives up on the swarm (``web_seed_wait``, ``WebSeedClock``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "HelpPlan",
    "ReaderChoice",
    "WebSeedClock",
    "helper_of",
    "rendezvous",
    "share_of",
    "unclaimed",
    "web_seed_wait",
]

_SPARE = 4  # records read beyond the ones still needed, in case some are dead
_MAX_WAVES = 3
_STUCK = 2.0  # an S3 reader's next piece not in after this long: it may be dead
_OWNERS_NEXT = 4  # pieces always left to a live reader: it is probably reading the first
_RACE = 0.5  # seconds: how late we may learn what a peer has


def rendezvous(nodes: Iterable[str], info_hash: str) -> list[str]:
    """Nodes in highest-random-weight order for one torrent (every node computes the same).

    Each artifact has its own order, so the S3 reads of successive releases spread over the
    fleet, and a node joining or leaving moves only its own position.
    """

    def weight(node: str) -> bytes:
        return hashlib.sha256(f"{info_hash}\0{node}".encode()).digest()

    return sorted(set(nodes), key=weight, reverse=True)


@dataclass
class ReaderChoice:
    """The first ``first`` live nodes in rendezvous order, found with few, bounded reads.

    The caller reads the records ``wanted()`` names (in parallel), reports each with
    ``found()``, and asks again until ``wanted()`` is empty. At most ``limit`` records are
    read, whatever the bucket holds: keys that look like node ids but are junk cost a
    bounded number of reads, and nodes past the limit count as not live. Every node walks
    the same order with the same limit, so they agree on the readers. This node (``me``)
    counts as live without a read: its own record may not have landed yet.
    """

    ranked: Sequence[str]
    me: str
    first: int
    limit: int
    live: dict[str, bool] = field(default_factory=dict)

    def wanted(self) -> list[str]:
        """The next records to read, in order; [] once the readers are known."""
        need, spare = self.first, _SPARE
        core: list[str] = []  # unknown nodes that may be readers if they are live
        spares: list[str] = []  # the next few, read at once in case some of those are dead
        for node in self.ranked:
            if len(self.live) + len(core) + len(spares) >= self.limit:
                break
            known = node == self.me or node in self.live
            if need > 0:
                if not known:
                    core.append(node)
                if not known or node == self.me or self.live[node]:
                    need -= 1
            elif spare > 0:
                if not known:
                    spares.append(node)
                    spare -= 1
            else:
                break
        return core + spares if core else []

    def found(self, node: str, live: bool) -> None:
        self.live[node] = live

    @property
    def chosen(self) -> list[str]:
        """The readers, in rendezvous order (fewer than ``first`` when too few are live)."""
        out: list[str] = []
        for node in self.ranked:
            if len(out) == self.first:
                break
            if node != self.me and node not in self.live:
                break  # the walk ended here: what lies beyond counts as not live, for all
            if node == self.me or self.live[node]:
                out.append(node)
        return out

    @property
    def position(self) -> int:
        """This node's place in the order among the nodes that may be live.

        A reader's place is its index among the readers; everyone else comes after them,
        in rendezvous order, skipping the nodes known to be dead.
        """
        chosen = self.chosen
        if self.me in chosen:
            return chosen.index(self.me)
        others = [n for n in self.ranked if n not in chosen and self.live.get(n, True)]
        return len(chosen) + others.index(self.me)


def share_of(chosen: Sequence[str], node: str, pieces: int) -> range:
    """The pieces ``node`` reads from the store itself: every ``len(chosen)``-th one.

    Interleaved, so that from the first second every reader has pieces the others lack.
    """
    if node not in chosen:
        return range(0)
    return range(list(chosen).index(node), pieces, len(chosen))


def helper_of(piece: int, readers: int) -> int:
    """The reader that reads ``piece`` if its owner (``piece % readers``, of 2 or more)
    falls behind.

    The other readers take turns along the owner's share, so helpers never read the same
    piece as each other: a piece is read twice only if its owner gets there at the same time.
    """
    owner = piece % readers
    turn = (piece // readers) % (readers - 1)
    return turn + (turn >= owner)


def unclaimed(
    pieces: int, available: Sequence[int], requested: Iterable[int], have: Callable[[int], bool]
) -> list[int]:
    """Pieces that nobody in reach has, nobody is sending us, and we lack: what a helper
    may read from the store. ``available`` counts the peers that have each piece; ``have``
    is asked last, and only about the pieces still in question."""
    busy = set(requested)
    return [
        piece
        for piece in range(pieces)
        if not (piece < len(available) and available[piece])
        and piece not in busy
        and not have(piece)
    ]


@dataclass
class HelpPlan:
    """Which pieces of slower readers this reader reads, once its own share is done.

    Owners read their shares front to back; a helper reads from the back, only pieces that
    ``helper_of`` gives it. It leaves each owner what that owner will read itself in the next
    ``_RACE`` seconds at the pace it is seen to go (at least ``_OWNERS_NEXT`` pieces): what
    a peer has is known a little late, and a piece read twice is S3 egress paid twice. An
    owner whose next piece does not arrive for ``_STUCK`` seconds gets no such reserve (it
    may be dead).
    """

    readers: int
    me: int
    started: float
    left_at_start: dict[int, int] = field(default_factory=dict)
    heads: dict[int, tuple[int, float]] = field(default_factory=dict)

    def next(self, missing: list[int], now: float) -> int | None:
        """The piece to read now, or None (nothing to help with yet)."""
        if self.readers < 2:
            return None
        shares: dict[int, list[int]] = {}
        for piece in sorted(missing):
            shares.setdefault(piece % self.readers, []).append(piece)
        elapsed = now - self.started
        candidates = []
        for owner, pieces in shares.items():
            if owner == self.me:
                continue
            self.left_at_start.setdefault(owner, len(pieces))
            if self.heads.get(owner, (-1, 0.0))[0] != pieces[0]:
                self.heads[owner] = (pieces[0], now)
            if now - self.heads[owner][1] >= _STUCK:
                reserve = 0
            elif elapsed < _RACE:
                continue  # its pace is not known yet
            else:
                pace = (self.left_at_start[owner] - len(pieces)) / elapsed
                reserve = max(_OWNERS_NEXT, math.ceil(pace * _RACE))
            candidates += [p for p in pieces[reserve:] if helper_of(p, self.readers) == self.me]
        return max(candidates, default=None)


def web_seed_wait(position: int, readers: int, delay: float) -> float:
    """How long a node may go without verified progress before it adds the web seed.

    In waves by rendezvous position: the S3 readers first, then the next as many, and so on,
    so a swarm that lost its readers is rescued by a few nodes, not the whole fleet at once.
    """
    wave = position // max(readers, 1) + 1
    return delay * min(wave, _MAX_WAVES)


@dataclass
class WebSeedClock:
    """When to add the web seed and when to give up on the swarm, from progress alone."""

    wait: float
    stall_seconds: float
    started: float
    web_seeded: bool = False
    done: int = -1
    last_progress: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_progress = self.started

    def observe(self, now: float, done: int) -> str | None:
        """``"web_seed"`` (add it now), ``"stalled"`` (fall back) or None."""
        if done > self.done:
            self.done, self.last_progress = done, now
        idle = now - self.last_progress
        if not self.web_seeded:
            return "web_seed" if idle >= self.wait else None
        return "stalled" if idle >= self.stall_seconds else None

    def web_seed_added(self, now: float) -> None:
        self.web_seeded = True
        self.last_progress = max(self.last_progress, now)
