"""The log on a store whose record says its create-if-absent is not atomic (the tagged layout),
and the failed claim that takes its content back, on a directory store.

The wrappers below stand in for a store that refuses or loses a write; the real stores (S3,
Swift, Swift's S3 API) do the same in tests/system/test_log_races.py.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from distsync.catalog import Catalog
from distsync.crypto.secret import generate_secret, parse_secret
from distsync.crypto.signing import SigningKey
from distsync.errors import StorageError, UnknownArtifactError
from distsync.layout import Layout
from distsync.logorder import LOOK_BACK, TAGGED, position, seq_of
from distsync.manifest import Manifest
from distsync.signed import Trust
from distsync.storage.local import LocalStore
from distsync.store_record import new_store_record

SIGNER = SigningKey.generate()  # as setup makes one: uploads are signed, and trusted
TRUST = Trust.of([SIGNER.public_key])

OBJECT = "distsync/v3/objects/x"


def manifest(name: str = "app.tgz") -> Manifest:
    return Manifest(
        name=name,
        size=3,
        sha256="0" * 64,
        object_key=OBJECT,
        object_size=64 + 48,
        chunk_size=1 << 20,
        uploaded_at=1.0,
        uploader="ci",
    )


def catalog_on(store: LocalStore, *, atomic: bool = False) -> Catalog:
    # As setup writes it: signed by the uploader's key (only a trusted record decides).
    record = replace(new_store_record(1.0, {"atomic_create": atomic}), signer=SIGNER.public_key)
    return Catalog(
        store, Layout(), parse_secret(generate_secret()), record, trust=TRUST, signer=SIGNER
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    (tmp_path / "bucket").mkdir()
    return LocalStore(tmp_path / "bucket")


def test_entries_are_keys_of_their_own_ordered_by_seq_and_tag(store: LocalStore) -> None:
    catalog = catalog_on(store)
    versions = [catalog.append(manifest(f"n{i}")) for i in range(3)]
    assert [seq_of(v.seq) for v in versions] == [1, 2, 3]
    assert all(v.seq >= TAGGED for v in versions)
    assert all(
        v.key == f"distsync/v3/log/{seq_of(v.seq):020d}-{v.version_id[-12:]}" for v in versions
    )
    assert [v.manifest.name for v in catalog.versions()] == ["n2", "n1", "n0"]
    assert catalog.newest("n1") == versions[1]
    assert catalog.find("n1", versions[1].version_id) == versions[1]


def test_a_bare_sequence_number_is_told_what_version_ids_look_like(store: LocalStore) -> None:
    catalog = catalog_on(store)
    catalog.append(manifest())
    with pytest.raises(UnknownArtifactError, match=r"look like 42\.9f3ac2e07b5d"):
        catalog.find("app.tgz", "1")


def test_racing_uploaders_keep_every_entry(store: LocalStore) -> None:
    catalog = catalog_on(store)
    made: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(10):
            version = catalog.append(manifest())
            with lock:
                made.append(version.seq)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 40
    assert sorted(v.seq for v in catalog.versions()) == sorted(made)


def test_a_reader_of_both_layouts_orders_old_atomic_entries_first(store: LocalStore) -> None:
    """A store whose record said "not atomic" before the tagged layout existed (issue 18's
    first phase) holds atomic entries: they stay readable and order before the new ones."""
    old = catalog_on(store, atomic=True)
    tagged = replace(new_store_record(1.0, {"atomic_create": False}), signer=SIGNER.public_key)
    new = Catalog(store, Layout(), old._secret, tagged, trust=TRUST, signer=SIGNER)
    first = old.append(manifest("a"))
    second = new.append(manifest("a"))
    assert first.seq == 1 and seq_of(second.seq) == 2
    assert new.newest("a") == second
    assert [v.seq for v in new.versions()] == [second.seq, first.seq]


class RefusingLog(LocalStore):
    """A store that refuses every log write, as Swift's S3 API refuses a conditional PUT."""

    def create(self, key: str, data: bytes) -> bool:
        if "/log/" in key:
            raise StorageError(f"{self.description}: cannot create {key}: HTTP 501")
        return super().create(key, data)

    def put(self, key: str, data: bytes) -> None:
        if "/log/" in key:
            raise StorageError(f"{self.description}: cannot write {key}: HTTP 501")
        super().put(key, data)


class LosingAnswers(LocalStore):
    """A store whose log writes land, but whose answers are lost on the way back."""

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        if "/log/" in key:
            raise StorageError(f"{self.description}: cannot write {key}: connection reset")

    def create(self, key: str, data: bytes) -> bool:
        super().create(key, data)
        raise StorageError(f"{self.description}: cannot create {key}: connection reset")


@pytest.mark.parametrize("atomic", [True, False])
def test_a_refused_claim_runs_undo(tmp_path: Path, atomic: bool) -> None:
    store = RefusingLog(tmp_path)
    undone: list[bool] = []
    with pytest.raises(StorageError, match="501"):
        catalog_on(store, atomic=atomic).append(manifest(), undo=lambda: undone.append(True))
    assert undone == [True]


@pytest.mark.parametrize("atomic", [True, False])
def test_a_claim_that_landed_without_an_answer_counts(tmp_path: Path, atomic: bool) -> None:
    store = LosingAnswers(tmp_path)
    undone: list[bool] = []
    version = catalog_on(store, atomic=atomic).append(manifest(), undo=lambda: undone.append(True))
    assert undone == [] and store.get(version.key)


class MovingLog(LocalStore):
    """Another uploader's entries pile up past ours while ours is being written, once."""

    moved = False

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        if "/log/" in key and not self.moved:
            self.moved = True
            seq = int(key.rsplit("/", 1)[1][:20])
            super().put(Layout().log_key(position(seq + LOOK_BACK + 1, 1)), b"someone else's")


def test_a_claim_the_log_moved_past_is_made_again_after_the_newest(tmp_path: Path) -> None:
    store = MovingLog(tmp_path)
    catalog = catalog_on(store)
    version = catalog.append(manifest())
    assert seq_of(version.seq) == LOOK_BACK + 3  # after the entry that moved the log on
    # The first claim stays in the log: an older version of the same content.
    assert [seq_of(v.seq) for v in catalog.versions()] == [LOOK_BACK + 3, 1]
