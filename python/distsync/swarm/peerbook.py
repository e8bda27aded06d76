"""Peer records: how fleet servers find each other for BitTorrent with no extra servers.

Each daemon writes one small record under ``{prefix}peers/{node id}`` (a random id it keeps in
its state directory), the only place the daemon identity may write (PutObject only). A record
holds the address and port its BitTorrent session listens on and an expiry time, sealed with
``distsync.sealed`` under its own kind (``PEER_RECORD``), with its own key as associated data.
An attacker with bucket write access cannot forge a record or move one to another key, and a
replayed old record of a node only repeats that node's old address until its authenticated
expiry: the worst they can do is deny service.

That includes filling ``peers/`` with junk, so every look is bounded whatever the bucket
holds: at most ``_MAX_LISTED`` keys are listed, at most ``_MAX_READS`` records are read to
choose the readers plus a sample of the rest, ``_PARALLEL`` at a time, each result is
remembered for ``_REMEMBER`` seconds, and records that fail are summed up in one warning
every ``_WARN_EVERY`` seconds instead of one line each.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

from distsync.errors import DistsyncError, FormatError, IntegrityError, NotFoundError
from distsync.node import is_node_id, load_node_id  # load_node_id re-exported: see distsync.node
from distsync.sealed import RecordKind, open_sealed, seal_record_body
from distsync.storage.base import Store
from distsync.swarm.plan import ReaderChoice, rendezvous
from distsync.transfer.fetch import Interrupted
from distsync.transfer.parallel import ordered_map

__all__ = [
    "PEER_RECORD",
    "Discovery",
    "PeerBook",
    "PeerRecord",
    "load_node_id",
    "open_record",
    "seal_record",
]

log = logging.getLogger(__name__)

PEER_RECORD = RecordKind(
    magic=b"DSP3", purpose="v3 peers", label=b"distsync v3 peer", noun="peer record", max_size=4096
)
PEERS_DIR = "peers/"
_PARALLEL = 8  # records read at once
_MAX_LISTED = 10_000  # keys listed per look: 10 LIST requests
_MAX_READS = 64  # records read per look to find the S3 readers
_REMEMBER = 60.0  # seconds a record read (or found wanting) is not read again
_WARN_EVERY = 600.0  # seconds between summaries of records that are not genuine


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


@dataclass(frozen=True)
class Discovery:
    chosen: list[str]  # the nodes that read from S3, in rendezvous order
    records: list[PeerRecord]  # peers to connect to (never this node)
    position: int  # this node's place in the order (< len(chosen): it is one of them)


class _Complaints:
    """Records that were not genuine: summed up, one warning line now and then."""

    def __init__(self) -> None:
        self._count = 0
        self._example = ""
        self._warned = -_WARN_EVERY
        self._lock = threading.Lock()  # records are read on several threads

    def add(self, key: str, reason: str) -> None:
        with self._lock:
            self._count += 1
            self._example = self._example or f"{key}: {reason}"

    def report(self, now: float) -> None:
        with self._lock:
            count, example = self._count, self._example
            self._count, self._example = 0, ""
        if not count:
            return
        level = logging.DEBUG
        if now - self._warned >= _WARN_EVERY:
            level, self._warned = logging.WARNING, now
        log.log(level, "ignored %d peer records that are not genuine (e.g. %s)", count, example)


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
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix + PEERS_DIR
        self.node = node
        self._secret = secret
        self._clock = clock
        self._rng = rng or random.Random()
        self._seen: dict[str, tuple[float, PeerRecord | None]] = {}  # node -> (read at, record)
        self._complaints = _Complaints()

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

    def node_ids(self, store: Store | None = None) -> list[str]:
        """The nodes with a record, live or not: one listing of at most ``_MAX_LISTED`` keys."""
        keys = islice((store or self.store).list_after(self.prefix, self.prefix), _MAX_LISTED)
        return [leaf for leaf in (key[len(self.prefix) :] for key in keys) if is_node_id(leaf)]

    def read(self, node: str, store: Store | None = None) -> PeerRecord | None:
        """A node's record if it is genuine and unexpired, else None (counted, not logged)."""
        key = self.key(node)
        try:
            record = open_record(self._secret, key, (store or self.store).get(key))
        except NotFoundError:
            return None
        except IntegrityError as exc:  # FormatError included
            self._complaints.add(key, str(exc).removeprefix(key + ": "))
            return None
        return record if record.expires > self._clock() else None

    def discover(
        self, info_hash: str, *, first: int, sample: int, store: Store | None = None
    ) -> Discovery:
        """Who reads from S3, where this node stands, and which peers to connect to.

        The first ``first`` live nodes in rendezvous order read the artifact's pieces from S3;
        everyone connects to them, because they have pieces first, and to a random sample of
        ``sample`` others. This node counts as live without a read (its record may not have
        landed yet) and is never its own peer. Store failures are logged: the node then finds
        fewer peers, and the web seed covers what they would have brought. ``store`` is the
        store to read through this time (the book's own by default).
        """
        via = store or self.store
        try:
            listed = self.node_ids(via)
        except Interrupted:
            raise
        except DistsyncError as exc:
            log.warning("cannot list peer records: %s", exc)
            listed = []
        ranked = rendezvous([*listed, self.node], info_hash)
        choice = ReaderChoice(ranked, self.node, first, limit=_MAX_READS)
        records: dict[str, PeerRecord] = {}
        while batch := choice.wanted():
            for node, record in zip(batch, self._read_many(batch, via)):
                choice.found(node, record is not None)
                if record is not None:
                    records[node] = record
        others = [node for node in ranked if node != self.node and node not in choice.live]
        sampled = self._rng.sample(others, min(sample, len(others)))
        for node, record in zip(sampled, self._read_many(sampled, via)):
            if record is not None:
                records[node] = record
        self._complaints.report(time.monotonic())
        return Discovery(choice.chosen, list(records.values()), choice.position)

    def _read_many(self, nodes: Sequence[str], store: Store) -> list[PeerRecord | None]:
        """Records of ``nodes`` in parallel, each read at most once per ``_REMEMBER`` s."""
        now = time.monotonic()
        fresh = {
            n: seen[1] for n in nodes if (seen := self._seen.get(n)) and now - seen[0] < _REMEMBER
        }
        unread = [n for n in nodes if n not in fresh]
        records = ordered_map(lambda n: self._read_quietly(n, store), unread, workers=_PARALLEL)
        for node, record in zip(unread, records):
            self._seen[node] = (now, record)
            fresh[node] = record
        if len(self._seen) > 16 * _MAX_READS:  # the map stays small, junk or not
            self._seen = {n: seen for n, seen in self._seen.items() if now - seen[0] < _REMEMBER}
        wall = self._clock()
        return [
            record if (record := fresh[n]) is not None and record.expires > wall else None
            for n in nodes
        ]

    def _read_quietly(self, node: str, store: Store) -> PeerRecord | None:
        try:
            return self.read(node, store)
        except Interrupted:
            raise
        except DistsyncError as exc:
            self._complaints.add(self.key(node), f"cannot read it: {exc}")
            return None
