"""The store record's pure part: parsing is strict about what it knows, blind to the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from distsync.crypto.secret import generate_secret, parse_secret
from distsync.crypto.signing import SigningKey
from distsync.errors import FormatError, IntegrityError
from distsync.layout import Layout
from distsync.storage.local import LocalStore
from distsync.store_record import (
    CAPABILITIES,
    FORMAT_VERSION,
    new_store_record,
    parse_store_record,
    read_store_record,
    seal_store_record,
)


def body(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "store_id": "0123456789abcdef" * 2,
        "format": FORMAT_VERSION,
        "created_at": 1767225600.0,
        "capabilities": {"atomic_create": False},
    }
    raw.update(changes)
    return raw


def test_a_newer_setups_record_opens_here() -> None:
    """Unknown keys and capability names are ignored: adding one is forward compatible."""
    record = parse_store_record(
        body(retention_days=30, capabilities={"atomic_create": False, "signatures": "ed25519"})
    )
    assert record.capability("atomic_create") is False
    assert set(record.capabilities) == set(CAPABILITIES)


def test_a_capability_the_record_predates_takes_its_default() -> None:
    record = parse_store_record(body(capabilities={}))
    assert record.capability("atomic_create") is CAPABILITIES["atomic_create"].default
    assert parse_store_record({k: v for k, v in body().items() if k != "capabilities"})


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"store_id": "x" * 32}, "store_id"),
        ({"store_id": None}, "store_id"),
        ({"format": 0}, "format"),
        ({"format": True}, "format"),
        ({"format": FORMAT_VERSION + 1}, "newer distsync"),
        ({"created_at": "today"}, "created_at"),
        ({"created_at": float("inf")}, "created_at"),
        ({"capabilities": []}, "capabilities"),
        ({"capabilities": {"atomic_create": "yes"}}, "atomic_create"),
        ({"capabilities": {"atomic_create": 1}}, "atomic_create"),
    ],
)
def test_what_it_knows_is_checked(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(FormatError, match=problem):
        parse_store_record(body(**changes))


def test_a_new_record_has_a_fresh_random_id() -> None:
    first, second = (new_store_record(1.0, {}) for _ in range(2))
    assert first.store_id != second.store_id and len(first.store_id) == 32


def test_a_wrong_secret_is_named_and_a_missing_record_is_none(tmp_path: Path) -> None:
    store, layout = LocalStore(tmp_path), Layout()
    secret = parse_secret(generate_secret())
    assert read_store_record(store, layout, secret) is None
    record = new_store_record(1.0, {"atomic_create": True})
    store.put(layout.store_record, seal_store_record(secret, layout, record))
    assert read_store_record(store, layout, secret) == record
    with pytest.raises(IntegrityError, match="set up with a different SharedSecret"):
        read_store_record(store, layout, parse_secret(generate_secret()))
    store.put(layout.store_record, b"junk")
    with pytest.raises(IntegrityError, match="not a distsync store record"):
        read_store_record(store, layout, secret)
    # A record sealed for another prefix does not open here (its key is its associated data).
    other = Layout("elsewhere/")
    store.put(layout.store_record, seal_store_record(secret, other, record))
    with pytest.raises(IntegrityError):
        read_store_record(store, layout, secret)


def test_a_signed_record_names_its_signer_and_an_altered_signature_fails(
    tmp_path: Path,
) -> None:
    store, layout = LocalStore(tmp_path), Layout()
    secret, signing_key = parse_secret(generate_secret()), SigningKey.generate()
    record = new_store_record(1.0, {})
    store.put(layout.store_record, seal_store_record(secret, layout, record, signing_key))
    opened = read_store_record(store, layout, secret)
    assert opened == record and opened is not None
    assert opened.signer == signing_key.public_key
    data = bytearray(store.get(layout.store_record))
    data[50] ^= 1  # inside the signature
    store.put(layout.store_record, bytes(data))
    with pytest.raises(IntegrityError, match="signature of this store record does not verify"):
        read_store_record(store, layout, secret)
    store.put(layout.store_record, seal_store_record(secret, layout, record))
    unsigned = read_store_record(store, layout, secret)
    assert unsigned is not None and unsigned.signer is None
