"""Peer records in the bucket: sealed, bound to their key, expiring, and read in bounded
amounts whatever an attacker puts under ``peers/`` (python-tuf style: one test per attack)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from distsync.errors import FormatError, IntegrityError, StorageError
from distsync.storage.local import LocalStore
from distsync.swarm.peerbook import PeerBook, PeerRecord, open_record, seal_record
from distsync.swarm.plan import web_seed_wait


class CountingStore(LocalStore):
    """A directory store that counts the small objects read."""

    gets = 0

    def get(self, key: str, *args: Any, **kw: Any) -> bytes:
        self.gets += 1
        return super().get(key, *args, **kw)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    (tmp_path / "bucket").mkdir()
    return CountingStore(tmp_path / "bucket")


def test_peer_records_are_sealed_bound_to_their_key_and_expire(store: LocalStore) -> None:
    secret = os.urandom(32)
    now = [1000.0]
    mine = PeerBook(store, "p/", secret, "a" * 32, clock=lambda: now[0])
    other = PeerBook(store, "p/", secret, "b" * 32, clock=lambda: now[0])
    mine.publish("10.0.0.1", 6881, ttl=60)
    other.publish("10.0.0.2", 6882, ttl=60)
    assert sorted(mine.node_ids()) == ["a" * 32, "b" * 32]
    assert mine.read("b" * 32) == PeerRecord("b" * 32, "10.0.0.2", 6882, 1060.0)
    sealed = store.get("p/peers/" + "b" * 32)
    assert b"10.0.0.2" not in sealed
    with pytest.raises(IntegrityError):  # moved to another node's key
        open_record(secret, "p/peers/" + "c" * 32, sealed)
    with pytest.raises(IntegrityError):  # another fleet's secret
        open_record(os.urandom(32), "p/peers/" + "b" * 32, sealed)
    store.put("p/peers/" + "c" * 32, sealed)  # a copy under a new id is not a node
    assert mine.read("c" * 32) is None
    now[0] = 1061.0
    assert mine.read("b" * 32) is None  # expired
    other.withdraw()
    now[0] = 1000.0
    assert mine.read("b" * 32) is None
    forged = seal_record(secret, "p/peers/" + "d" * 32, PeerRecord("b" * 32, "x", 1, 2e9))
    with pytest.raises(FormatError):
        open_record(secret, "p/peers/" + "d" * 32, forged)


def test_every_node_finds_the_same_readers_and_its_own_place(store: LocalStore) -> None:
    secret = os.urandom(32)
    nodes = [f"{i:032x}" for i in range(8)]
    books = {n: PeerBook(store, "p/", secret, n) for n in nodes}
    for book in books.values():
        book.publish("127.0.0.1", 7000, ttl=60)
    seen = {n: book.discover("aa" * 20, first=2, sample=40) for n, book in books.items()}
    chosen = {tuple(found.chosen) for found in seen.values()}
    assert len(chosen) == 1 and len(next(iter(chosen))) == 2
    assert sorted(found.position for found in seen.values()) == list(range(8))
    assert all(len(found.records) == 7 for found in seen.values())
    waits = sorted(web_seed_wait(found.position, 2, 10.0) for found in seen.values())
    assert waits == [10, 10, 20, 20, 30, 30, 30, 30]


def test_60000_junk_keys_under_peers_cost_bounded_reads_and_one_warning(
    store: CountingStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bucket writer fills peers/ with 60,000 keys that look like node ids.

    Before: each look read every one of them, one after the other, and logged a warning for
    each (12 MB), again every 10 s while a download ran. Now a look reads a bounded number,
    eight at a time, remembers what it read, and sums the junk up in one warning line.
    """
    peers = tmp_path / "bucket" / "p" / "peers"
    peers.mkdir(parents=True)
    for i in range(60_000):  # what an attacker with bucket write access can do
        (peers / f"{i:032x}").write_bytes(b"not a record")
    (peers / "not-even-an-id").write_bytes(b"x")
    secret = os.urandom(32)
    me = PeerBook(store, "p/", secret, "f" * 32)
    me.publish("10.0.0.1", 6881, ttl=60)
    caplog.set_level(logging.DEBUG, logger="distsync.swarm.peerbook")

    found = me.discover("ab" * 20, first=8, sample=40)
    first_look = store.gets
    assert first_look <= 64 + 40  # the readers' walk, capped, and the sample
    assert found.records == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "ignored" in warnings[0].getMessage() and "not a distsync peer record" in (
        warnings[0].getMessage()
    )

    caplog.clear()
    me.discover("ab" * 20, first=8, sample=40)  # the download's look 10 s later
    assert store.gets - first_look <= 40  # only a fresh sample; the walk is remembered
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no repeat
    assert sum(len(r.getMessage()) for r in caplog.records) < 1000


def test_a_store_that_fails_peer_reads_is_summed_up_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Refusing(LocalStore):
        def get(self, key: str, *args: Any, **kw: Any) -> bytes:
            raise StorageError(f"access denied reading {key}")

    (tmp_path / "bucket" / "p" / "peers").mkdir(parents=True)
    store = Refusing(tmp_path / "bucket")
    for i in range(200):
        (tmp_path / "bucket" / "p" / "peers" / f"{i:032x}").write_bytes(b"x")
    found = PeerBook(store, "p/", os.urandom(32), "f" * 32).discover("cd" * 20, first=8, sample=40)
    assert found.records == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "access denied" in warnings[0], warnings
