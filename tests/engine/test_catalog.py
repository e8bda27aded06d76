"""The manifest log on a directory store: ordering, races, replay and tampering."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from distsync.catalog import Catalog, Rejected
from distsync.crypto.secret import generate_secret, parse_secret
from distsync.errors import FormatError, IntegrityError, NotFoundError, UsageError
from distsync.layout import Layout
from distsync.manifest import Manifest, open_manifest, seal_manifest, validate_name
from distsync.storage.local import LocalStore


def manifest(name: str = "app.tgz") -> Manifest:
    return Manifest(
        name=name,
        size=3,
        sha256="0" * 64,
        object_key="distsync/v3/objects/x",
        object_size=64 + 48,
        chunk_size=1 << 20,
        uploaded_at=1.0,
        uploader="ci",
    )


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "bucket").mkdir()
    return Catalog(
        LocalStore(tmp_path / "bucket"), Layout(), parse_secret(generate_secret())
    )


def test_append_orders_by_sequence(catalog: Catalog) -> None:
    seqs = [catalog.append(manifest(f"n{i}")).seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [v.manifest.name for v in catalog.versions()] == [
        "n4",
        "n3",
        "n2",
        "n1",
        "n0",
    ]
    assert [e.seq for e in catalog.entries_after(3)] == [4, 5]


def test_concurrent_uploaders_never_share_a_number(catalog: Catalog) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            seq = catalog.append(manifest()).seq
            with lock:
                results.append(seq)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 41))


def test_stale_or_bogus_marker_hint_is_harmless(catalog: Catalog) -> None:
    catalog.append(manifest())
    catalog.append(manifest())
    catalog.store.put(catalog.layout.marker, b'{"latest": 0}')
    assert catalog.append(manifest()).seq == 3
    catalog.store.put(catalog.layout.marker, b"garbage")
    assert catalog.append(manifest()).seq == 4


def test_replayed_manifest_under_a_new_key_is_rejected(catalog: Catalog) -> None:
    catalog.append(manifest())
    store = catalog.store
    old = store.get(catalog.layout.log_key(1))
    assert store.create(catalog.layout.log_key(2), old)
    entries = list(catalog.entries_after(0))
    assert (
        isinstance(entries[1], Rejected)
        and "moved from another key" in entries[1].reason
    )
    assert [v.seq for v in catalog.versions()] == [1]


def test_wrong_secret_and_tampering_are_rejected(catalog: Catalog) -> None:
    key = catalog.layout.log_key(1)
    sealed = seal_manifest(b"k" * 32, key, manifest())
    assert open_manifest(b"k" * 32, key, sealed).name == "app.tgz"
    with pytest.raises(IntegrityError):
        open_manifest(b"j" * 32, key, sealed)
    flipped = bytearray(sealed)
    flipped[20] ^= 1
    with pytest.raises(IntegrityError):
        open_manifest(b"k" * 32, key, bytes(flipped))
    with pytest.raises(FormatError):
        open_manifest(b"k" * 32, key, b"nope")


def test_find_and_newest(catalog: Catalog) -> None:
    catalog.append(manifest("a"))
    catalog.append(manifest("b"))
    catalog.append(manifest("a"))
    assert catalog.newest("a").seq == 3
    assert catalog.find("a", "1").seq == 1
    with pytest.raises(NotFoundError, match="not 'a'"):
        catalog.find("a", "2")
    with pytest.raises(NotFoundError):
        catalog.find("a", "99")
    with pytest.raises(NotFoundError):
        catalog.newest("zzz")


@pytest.mark.parametrize(
    "bad", ["", ".", "..", ".hidden", "a/b", "a\\b", "a\0b", "x" * 256, "tab\there"]
)
def test_names_must_be_plain_file_names(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_name(bad)
