"""The storage interface every backend implements.

Keys are ``/``-separated strings below the store's root (bucket). Large objects are written
through an ``ObjectWriter`` (a stream that becomes visible only on ``commit``) and read by
ranges; small ones (manifests, the marker, records) whole, and never past a size limit: whoever
can write to the bucket could otherwise put a 3 GiB "log entry" there and make every reader
load it. ``create`` is a conditional create
(``If-None-Match: *`` on S3, ``O_EXCL``/``link`` on a directory): the global manifest log is
built on it where the store makes it atomic (``distsync.logorder``). ``delete`` removes what an
upload stored when its log claim failed, so that nothing is left that no entry refers to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from distsync.errors import ObjectTooLargeError

__all__ = [
    "SMALL_OBJECT_LIMIT",
    "Inventory",
    "ObjectWriter",
    "Presigner",
    "Store",
    "StoredObject",
    "too_large",
]

# The most ``Store.get`` reads unless told otherwise. Genuine small objects are far smaller:
# sealed records are capped at RecordKind.max_size (64 KiB for manifests), the marker is ~60
# bytes. A test checks that every record kind fits.
SMALL_OBJECT_LIMIT = 1 << 20


class ObjectWriter(Protocol):
    """A new object being written; nothing is visible at its key until ``commit()``."""

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data``; the writer must copy it if it keeps it past the call."""

    def commit(self) -> None:
        """Make the object visible at its key."""

    def abort(self) -> None:
        """Discard everything written; nothing appears at the key."""


class Store(Protocol):
    description: str

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet; False when it already did."""

    def put(self, key: str, data: bytes) -> None:
        """Write ``key`` whole, replacing what was there."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (a large object with all its parts); a missing key is no error."""

    def writer(self, key: str) -> ObjectWriter:
        """Stream a (large) new object to ``key``."""

    def get(self, key: str, *, limit: int = SMALL_OBJECT_LIMIT) -> bytes:
        """Read a small object whole; NotFoundError if it does not exist.

        An object larger than ``limit`` bytes raises ObjectTooLargeError (a FormatError)
        without being read: at most ``limit + 1`` bytes are ever transferred."""

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Read ``length`` bytes at ``start`` (fewer only at the end of the object)."""

    def size(self, key: str) -> int:
        """The object's size in bytes; NotFoundError if it does not exist."""

    def changed(self, key: str, since: str | None) -> str | None:
        """A cheap conditional check of one object: its new version tag if it differs from
        ``since`` (or ``""`` when the object does not exist and ``since`` was something
        else), None when unchanged."""

    def list_after(self, prefix: str, start_after: str) -> Iterator[str]:
        """Keys under ``prefix`` that sort after ``start_after``, in lexicographic order.

        Only keys that hold objects: a directory store leaves out anything at them that is not
        a regular file."""


class Presigner(Protocol):
    """Optional: a store that hands out time-limited plain-HTTP GET URLs (S3 presigning).

    ``Storage = "S3+BitTorrent"`` gives one to libtorrent as the web seed."""

    def presign(self, key: str, expires: int) -> str:
        """A GET URL for ``key``, valid ``expires`` seconds; it carries a signature."""


def too_large(where: str, key: str, size: int | None, limit: int) -> ObjectTooLargeError:
    """The one line for a small object over its limit (``size`` when the store told it)."""
    holds = f"holds {size} bytes, more than" if size is not None else "holds more than"
    return ObjectTooLargeError(
        f"{where}: {key} {holds} the {limit} bytes that a log entry, marker or record may "
        "have; refused without reading it"
    )


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float  # seconds since the epoch, by the store's clock


class Inventory(Protocol):
    """Optional: a listing that tells each object's size and age (``prune --orphans`` leaves
    contents younger than a safe age alone: they may belong to an upload under way)."""

    def inventory(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under ``prefix``, in key order."""
