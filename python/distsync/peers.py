"""Peer records: how fleet servers find each other for BitTorrent with no extra servers.

Each daemon writes one small record under ``{prefix}peers/{node id}`` (a random id it keeps in
its state directory), the only place the daemon identity may write (PutObject only). A record
holds the address and port its BitTorrent session listens on and an expiry time, sealed like
manifests are (``distsync.sealed``): ``b"DSP3" || AEAD_AES_128_CBC_HMAC_SHA_256(JSON)`` under
``derive_key(secret, "v3 peers")``, with its own key as associated data. An attacker with
bucket write access cannot forge a record or move one to another key, and a replayed old
record of a node only repeats that node's old address until its authenticated expiry: the
worst they can do is deny service.

Reading scales with the fleet: listing the prefix (1000 keys per request) yields every node id,
which is all the rendezvous order needs; only the first few live nodes (the ones that read from
S3) and a random sample of the rest are read.

The rest of the file is the pure division of labour built on that order: which pieces each S3
reader reads (``share_of``), who covers a reader that falls behind or dies (``helper_of``,
``HelpPlan``), and how long each node waits before it adds the web seed (``web_seed_wait``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from distsync.errors import DistsyncError, FormatError, IntegrityError, NotFoundError
from distsync.node import load_node_id  # re-exported: node identity lives in distsync.node
from distsync.sealed import RecordKind, open_sealed, seal_record_body
from distsync.storage.base import Store
from distsync.transfer.parallel import ordered_map

__all__ = [
    "Discovery",
    "HelpPlan",
    "PeerBook",
    "PeerRecord",
    "helper_of",
    "load_node_id",
    "open_record",
    "rendezvous",
    "seal_record",
    "share_of",
    "web_seed_wait",
]

log = logging.getLogger(__name__)

PEER_RECORD = RecordKind(
    magic=b"DSP3", purpose="v3 peers", label=b"distsync v3 peer", noun="peer record", max_size=4096
)
PEERS_DIR = "peers/"
_NODE_ID_LEN = 32  # hex characters: 128 random bits
_SPARE = 4  # records read beyond the first few, in case some of those are dead
_READERS = 8
_MAX_WAVES = 3
_STUCK = 2.0  # an S3 reader's next piece not in after this long: it may be dead
_OWNERS_NEXT = 4  # pieces always left to a live reader: it is probably reading the first
_RACE = 0.5  # seconds: how late we may learn what a peer has


@dataclass(frozen=True)
class PeerRecord:
    node: str
    host: str
    port: int
    expires: float

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


def seal_record(secret: bytes, key: str, record: PeerRecord) -> bytes:
    body = {
        "node": record.node,
        "host": record.host,
        "port": record.port,
        "expires": record.expires,
    }
    return seal_record_body(PEER_RECORD, secret, key, body)


def open_record(secret: bytes, key: str, data: bytes) -> PeerRecord:
    """Verify the record stored at ``key``; IntegrityError/FormatError if it is not genuine."""
    raw = open_sealed(PEER_RECORD, secret, key, data)
    try:
        record = PeerRecord(str(raw["node"]), str(raw["host"]), int(raw["port"]), raw["expires"])
    except (ValueError, KeyError, TypeError):
        raise FormatError(f"{key}: authenticated peer record is malformed") from None
    if not isinstance(record.expires, (int, float)) or not 0 < record.port < 65536:
        raise FormatError(f"{key}: authenticated peer record is malformed")
    if not key.endswith("/" + record.node):
        raise FormatError(f"{key}: peer record names another node")
    return record


def rendezvous(nodes: Iterable[str], info_hash: str) -> list[str]:
    """Nodes in highest-random-weight order for one torrent (every node computes the same).

    Each artifact has its own order, so the S3 reads of successive releases spread over the
    fleet, and a node joining or leaving moves only its own position.
    """

    def weight(node: str) -> bytes:
        return hashlib.sha256(f"{info_hash}\0{node}".encode()).digest()

    return sorted(set(nodes), key=weight, reverse=True)


@dataclass(frozen=True)
class Discovery:
    chosen: list[str]  # the nodes that read from S3, in rendezvous order
    records: list[PeerRecord]  # peers to connect to (never this node)
    position: int  # this node's place in the order (< len(chosen): it is one of them)


class PeerBook:
    """This node's record in the bucket, and the other nodes' records."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        secret: bytes,
        node: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.prefix = prefix + PEERS_DIR
        self.node = node
        self._secret = secret
        self._clock = clock

    def key(self, node: str) -> str:
        return self.prefix + node

    def publish(self, host: str, port: int, ttl: float) -> None:
        record = PeerRecord(self.node, host, port, self._clock() + ttl)
        key = self.key(self.node)
        self.store.put(key, seal_record(self._secret, key, record))

    def withdraw(self) -> None:
        """Leave the swarm: overwrite our record with an expired one. (The daemon identity may
        only put records; the sealed expiry is what readers trust anyway.)"""
        key = self.key(self.node)
        self.store.put(key, seal_record(self._secret, key, PeerRecord(self.node, "-", 1, 0)))

    def node_ids(self) -> list[str]:
        """Every node with a record, live or not: one listing, no reads."""
        found = []
        for key in self.store.list_after(self.prefix, self.prefix):
            leaf = key[len(self.prefix) :]
            if len(leaf) == _NODE_ID_LEN and all(c in "0123456789abcdef" for c in leaf):
                found.append(leaf)
        return found

    def read(self, node: str) -> PeerRecord | None:
        """A node's record if it is genuine and unexpired, else None."""
        key = self.key(node)
        try:
            record = open_record(self._secret, key, self.store.get(key))
        except NotFoundError:
            return None
        except IntegrityError as exc:
            log.warning("ignoring peer record %s: %s", key, exc)
            return None
        return record if record.expires > self._clock() else None

    def discover(self, info_hash: str, *, first: int, sample: int) -> Discovery:
        """Who reads from S3, where this node stands, and which peers to connect to.

        The first ``first`` live nodes in rendezvous order read the artifact's pieces from S3;
        everyone connects to them, because they have pieces first, and to a random sample of
        ``sample`` others. This node counts as live without a read (its record may not have
        landed yet) and is never its own peer.
        """
        try:
            listed = self.node_ids()
        except DistsyncError as exc:
            log.warning("cannot list peer records: %s", exc)
            listed = []
        ranked = rendezvous([*listed, self.node], info_hash)
        # One round of parallel reads: the first few (with a margin for dead nodes) and a
        # random sample of the rest. Joining late costs the whole swarm time.
        head = ranked[: first + _SPARE]
        rest = ranked[first + _SPARE :]
        wanted = [n for n in head + random.sample(rest, min(sample, len(rest))) if n != self.node]
        read = dict(zip(wanted, ordered_map(self._read_quietly, wanted, workers=_READERS)))
        chosen: list[str] = []
        for node in ranked:
            if len(chosen) == first:
                break
            if node == self.node or (read[node] if node in read else self._read_quietly(node)):
                chosen.append(node)
        records = [record for record in read.values() if record is not None]
        if self.node in chosen:
            mine = chosen.index(self.node)
        else:
            mine = len(chosen) + [n for n in ranked if n not in chosen].index(self.node)
        return Discovery(chosen, records, mine)

    def _read_quietly(self, node: str) -> PeerRecord | None:
        try:
            return self.read(node)
        except DistsyncError as exc:
            log.warning("cannot read peer record of %s: %s", node, exc)
            return None


# -- who reads what from S3 (pure) -------------------------------------------------------------


def share_of(chosen: list[str], node: str, pieces: int) -> range:
    """The pieces ``node`` reads from the store itself: every ``len(chosen)``-th one.

    Interleaved, so that from the first second every reader has pieces the others lack.
    """
    if node not in chosen:
        return range(0)
    return range(chosen.index(node), pieces, len(chosen))


def helper_of(piece: int, readers: int) -> int:
    """The reader that reads ``piece`` if its owner (``piece % readers``, of 2 or more)
    falls behind.

    The other readers take turns along the owner's share, so helpers never read the same
    piece as each other: a piece is read twice only if its owner gets there at the same time.
    """
    owner = piece % readers
    turn = (piece // readers) % (readers - 1)
    return turn + (turn >= owner)


@dataclass
class HelpPlan:
    """Which pieces of slower readers this reader reads, once its own share is done.

    Owners read their shares front to back; a helper reads from the back, only pieces that
    ``helper_of`` gives it. It leaves each owner what that owner will read itself in the next
    ``_RACE`` seconds at the pace it is seen to go (at least ``_OWNERS_NEXT`` pieces): what
    a peer has is known a little late, and a piece read twice is S3 egress paid twice. An
    owner whose next piece does not arrive for ``_STUCK`` seconds gets no such reserve (it
    may be dead). Pure: the caller passes what it sees and the time.
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
