"""The manifest log on a directory store: ordering, races, replay and tampering."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from distsync.catalog import Catalog, Rejected
from distsync.crypto.secret import generate_secret, parse_secret
from distsync.crypto.signing import SigningKey
from distsync.errors import (
    FormatError,
    IntegrityError,
    StorageError,
    UnknownArtifactError,
    UsageError,
)
from distsync.layout import MAX_SEQ, Layout
from distsync.logorder import position
from distsync.manifest import (
    MAX_NAME_BYTES,
    Manifest,
    check_manifest,
    open_manifest,
    seal_manifest,
    validate_name,
)
from distsync.signed import Trust
from distsync.storage.local import LocalStore

SIGNER = SigningKey.generate()


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
    """An uploader's view, as setup configures it: signs with its key and trusts it."""
    (tmp_path / "bucket").mkdir()
    return Catalog(
        LocalStore(tmp_path / "bucket"),
        Layout(),
        parse_secret(generate_secret()),
        trust=Trust.of([SIGNER.public_key]),
        signer=SIGNER,
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
    # The signature covers the key, and is checked before anything is decrypted.
    assert isinstance(entries[1], Rejected), entries
    assert "signature of this manifest does not verify" in entries[1].reason
    assert [v.seq for v in catalog.versions()] == [1]


def test_replayed_unsigned_manifest_under_a_new_key_is_rejected(tmp_path: Path) -> None:
    """A store set up before signing: the sealed record's associated data is its key."""
    (tmp_path / "bucket").mkdir()
    catalog = Catalog(
        LocalStore(tmp_path / "bucket"), Layout(), parse_secret(generate_secret()), trust=Trust()
    )
    catalog.append(manifest())
    old = catalog.store.get(catalog.layout.log_key(1))
    assert catalog.store.create(catalog.layout.log_key(2), old)
    entries = list(catalog.entries_after(0))
    assert isinstance(entries[1], Rejected) and "moved from another key" in entries[1].reason
    assert [v.seq for v in catalog.versions()] == [1]


def test_a_config_that_trusts_signers_but_cannot_sign_appends_nothing(
    catalog: Catalog,
) -> None:
    """The last guard under `upload -c distsyncd.toml`: never write what the fleet refuses."""
    server = Catalog(catalog.store, catalog.layout, catalog._secret, trust=catalog.trust)
    with pytest.raises(UsageError, match="no SigningKey"):
        server.append(manifest())
    assert list(server.log_seqs_after(0)) == []


def test_wrong_secret_and_tampering_are_rejected(catalog: Catalog) -> None:
    key = catalog.layout.log_key(1)
    objects = catalog.layout.objects_prefix
    unsigned = Trust()  # a store set up before signing
    sealed = seal_manifest(b"k" * 32, key, manifest())
    opened = open_manifest(b"k" * 32, key, sealed, objects_prefix=objects, trust=unsigned)
    assert opened.name == "app.tgz"
    with pytest.raises(IntegrityError):
        open_manifest(b"j" * 32, key, sealed, objects_prefix=objects, trust=unsigned)
    flipped = bytearray(sealed)
    flipped[20] ^= 1
    with pytest.raises(IntegrityError):
        open_manifest(b"k" * 32, key, bytes(flipped), objects_prefix=objects, trust=unsigned)
    with pytest.raises(FormatError):
        open_manifest(b"k" * 32, key, b"nope", objects_prefix=objects, trust=unsigned)


def test_find_and_newest(catalog: Catalog) -> None:
    catalog.append(manifest("a"))
    catalog.append(manifest("b"))
    catalog.append(manifest("a"))
    assert catalog.newest("a").seq == 3
    assert catalog.find("a", "1").seq == 1
    with pytest.raises(UnknownArtifactError, match="not 'a'"):
        catalog.find("a", "2")
    with pytest.raises(UnknownArtifactError):
        catalog.find("a", "99")
    with pytest.raises(UnknownArtifactError):
        catalog.newest("zzz")
    with pytest.raises(UsageError, match="not a version id"):
        catalog.find("a", "x1")


@pytest.mark.parametrize(
    "bad", ["", ".", "..", ".hidden", "a/b", "a\\b", "a\0b", "x" * 256, "tab\there"]
)
def test_names_must_be_plain_file_names(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_name(bad)


@pytest.mark.parametrize("latest", [10**20 - 1, 10**30, -5, "7", True, 2])
def test_a_marker_hint_is_used_only_when_it_names_a_genuine_entry(
    catalog: Catalog, latest: object
) -> None:
    catalog.append(manifest())
    catalog.store.put(catalog.layout.marker, json.dumps({"latest": latest}).encode())
    assert catalog.append(manifest()).seq == 2
    assert [v.seq for v in catalog.versions()] == [2, 1]


def test_no_sequence_number_past_twenty_digits_is_ever_claimed(catalog: Catalog) -> None:
    catalog.store.put(catalog.layout.log_key(MAX_SEQ), b"junk")
    with pytest.raises(StorageError, match="no log sequence number is free"):
        catalog.append(manifest())
    with pytest.raises(ValueError):
        position(MAX_SEQ + 1)
    with pytest.raises(ValueError):
        position(MAX_SEQ + 1, 0)
    # The highest position of either layout still has 20 digits.
    assert catalog.layout.log_key(position(MAX_SEQ, (1 << 48) - 1)).endswith(
        f"/{MAX_SEQ}-ffffffffffff"
    )


def test_newest_reads_the_log_from_its_end(catalog: Catalog) -> None:
    for name in ("a", "b", "a", "c"):
        catalog.append(manifest(name))
    catalog.store.put(catalog.layout.log_key(1), b"unreadable now")  # never needed
    assert catalog.newest("a").seq == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chunk_size", 0),
        ("chunk_size", 16385),
        ("size", -1),
        ("size", 1 << 60),
        ("object_size", 1),
        ("object_key", ""),
        ("object_key", "distsync/v3/objects/../../x"),
        ("object_key", "elsewhere/objects/x"),
        ("name", "x\ud800"),
        ("name", "x\x85"),
        ("name", "x\x7f"),
        ("name", "n" * (MAX_NAME_BYTES + 1)),
        ("uploaded_at", float("nan")),
        ("uploaded_at", 1e300),
        ("uploaded_at", 10**400),
        ("uploader", "ci\x1b[2J"),
        ("mode", -1),
        ("mode", 0o10000),
        ("sha256", "A" * 64),
        ("format", "v2"),
        ("tags_sha256", "0" * 63),
        ("tags_sha256", "g" * 64),
    ],
)
def test_every_manifest_field_is_range_checked(field: str, value: object) -> None:
    hostile = dataclasses.replace(manifest(), **{field: value})
    with pytest.raises(FormatError, match=f"field {field} " if field != "name" else "name"):
        check_manifest(hostile, "distsync/v3/objects/")


def test_the_longest_name_still_fits_its_part_file() -> None:
    name = "n" * MAX_NAME_BYTES
    check_manifest(dataclasses.replace(manifest(), name=name), "distsync/v3/objects/")
    assert len(f".{name}.v{MAX_SEQ}.distsync-part".encode()) == 255
