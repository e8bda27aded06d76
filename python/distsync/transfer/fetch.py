"""Fetch one artifact version: ranged reads, chunk-by-chunk verification, atomic placement.

The v3 format is seekable, so the ciphertext is read in batches of whole chunks, in parallel,
and each chunk is authenticated before its plaintext is written. The plaintext lands in a part
file beside the destination; only when every chunk verified and the whole matches the
manifest is it fsynced and renamed into place.

The whole is checked one of two ways. A manifest that carries ``tags_sha256`` (signed
uploads) names the object by its header and chunk tags (``stream.TagsDigest``): 16 bytes per
chunk to hash instead of every byte, about a fifth of a fetch's CPU. Otherwise, and whenever
a part file left by a crash (kill -9, power loss) is continued, it is the plaintext's
SHA-256: the kept whole chunks were read back from disk, which no tag covers, so they are
re-read into it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from distsync.crypto import stream
from distsync.errors import ContentGoneError, DistsyncError, IntegrityError, NotFoundError
from distsync.fsutil import PART_SUFFIX, atomic_output
from distsync.logorder import seq_of
from distsync.manifest import Version

__all__ = ["ChunkSource", "FetchResult", "Interrupted", "fetch_version"]

log = logging.getLogger(__name__)

# One ranged GET per batch of whole chunks; memory is about (workers + 2) x 2 batches. A GET
# costs the client about 1.5 ms of CPU: 6 MiB fetch a GiB faster than 4 MiB, and 8 MiB would
# pass the 150 MiB peak RSS (docs/benchmarks.md).
_BATCH_BYTES = 6 << 20


class ChunkSource(Protocol):
    """Where ciphertext is read from: every Store, or a swarm's local copy as it arrives."""

    description: str

    def size(self, key: str) -> int: ...

    def get_range(self, key: str, start: int, length: int) -> bytes: ...


class Interrupted(DistsyncError):
    """A stop was requested while a transfer was under way."""

    exit_code = 130


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str
    seconds: float


def part_path(dest: Path, version: Version) -> Path:
    """Where a download of ``version`` to ``dest`` accumulates (kept only across a crash).

    Named by the sequence number alone, which fits the name limit of MAX_NAME_BYTES. Two
    versions of a name that share one (racing uploads on the tagged log layout) share the
    part file too; a resume from the other one's fails the final SHA-256 and starts afresh.
    """
    return dest.parent / f".{dest.name}.v{seq_of(version.seq)}{PART_SUFFIX}"


def _other_parts(dest: Path, part: Path) -> list[Path]:
    """Part files of other versions of ``dest``'s name, and of no other name: the name is
    escaped for the glob (a name may hold ``*`` or ``[``) and matched exactly after it (the
    part of a name like ``a.v9`` must not count as one of ``a``)."""
    exact = re.compile(re.escape(f".{dest.name}.v") + r"[0-9]+" + re.escape(PART_SUFFIX))
    found = dest.parent.glob(f"{glob.escape('.' + dest.name)}.v*{PART_SUFFIX}")
    return [path for path in found if path != part and exact.fullmatch(path.name)]


def _resume(out: BinaryIO, chunk_size: int, count: int, digest: Any) -> int:
    """Keep the whole chunks a crashed fetch already wrote; returns how many. Their bytes are
    fed to the digest, so the final SHA-256 check still covers the whole file."""
    size = out.seek(0, os.SEEK_END)
    keep = min(size // chunk_size, count - 1)
    out.truncate(keep * chunk_size)
    out.seek(0)
    remaining = keep * chunk_size
    while remaining:
        block = out.read(min(remaining, 1 << 20))
        if not block:
            raise IntegrityError("a partial download shrank while it was read")
        digest.update(block)
        remaining -= len(block)
    return keep


def fetch_version(
    store: ChunkSource,
    secret: bytes,
    version: Version,
    dest: Path,
    *,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    mode_mask: int = 0o777,
) -> FetchResult:
    """Fetch ``version`` to ``dest``, with the manifest's file mode masked by ``mode_mask``
    (setuid, setgid and sticky bits only when the caller allows them)."""
    started = time.monotonic()
    manifest = version.manifest
    key = manifest.object_key
    if manifest.format != "v3":
        raise IntegrityError(
            f"version {version.version_id}: unsupported format {manifest.format!r}"
        )
    try:
        actual_size = store.size(key)
    except NotFoundError:
        # The log entry is genuine (it opened), so the content was deleted: pruned.
        raise ContentGoneError(manifest.name, version.version_id) from None
    expected = stream.ciphertext_size(manifest.size, manifest.chunk_size)
    if actual_size != manifest.object_size or expected != manifest.object_size:
        raise IntegrityError(
            f"version {version.version_id}: stored object is {actual_size} bytes, "
            f"the manifest says {manifest.object_size}"
        )
    decryptor = stream.StreamDecryptor(secret, store.get_range(key, 0, stream.HEADER_LEN))
    if decryptor.header.chunk_size != manifest.chunk_size:
        raise IntegrityError(f"version {version.version_id}: chunk size differs from the manifest")

    part = part_path(dest, version)
    for other in _other_parts(dest, part):  # crashed fetches of versions no longer wanted
        with contextlib.suppress(OSError):
            other.unlink()
    mode = manifest.mode & mode_mask & 0o7777
    args = (store, decryptor, version, dest, part, mode, workers, progress, should_stop, started)
    resuming = part.exists()
    try:
        return _fetch(*args)
    except IntegrityError:
        if not resuming:
            raise
        # The kept prefix may be what was wrong (the final SHA-256 covers it); the failure
        # removed it, so this attempt starts afresh.
        log.warning("resumed download of %s failed verification; fetching it whole", dest.name)
        return _fetch(*args)


def _fetch(
    store: ChunkSource,
    decryptor: stream.StreamDecryptor,
    version: Version,
    dest: Path,
    part: Path,
    mode: int,
    workers: int,
    progress: Callable[[int], None] | None,
    should_stop: Callable[[], bool],
    started: float,
) -> FetchResult:
    manifest = version.manifest
    key = manifest.object_key
    count = stream.chunk_count(manifest.size, manifest.chunk_size)

    def read(start: int, length: int) -> bytes:
        return store.get_range(key, start, length)

    def check() -> None:
        if should_stop():
            raise Interrupted("stopped before the transfer finished")

    digest = hashlib.sha256()
    with atomic_output(dest, mode=mode, part=part) as out:
        kept = _resume(out, manifest.chunk_size, count, digest)
        if kept:
            log.info("%s: continuing a download after %d chunks", dest.name, kept)
        tags = None
        if manifest.tags_sha256 is not None and not kept:
            tags = stream.TagsDigest(decryptor.header.raw)
        written = kept * manifest.chunk_size
        if progress is not None and written:
            progress(written)
        # Ranged reads, chunk verification, decryption, the SHA-256 and the writes overlap.
        written += stream.decrypt_ranges(
            decryptor,
            read,
            manifest.object_size,
            out,
            first_chunk=kept,
            digest=digest.update if tags is None else None,
            progress=progress,
            workers=workers,
            check=check,
            batch_bytes=_BATCH_BYTES,
            tags=tags,
        )
        if tags is not None:
            whole_matches = tags.hexdigest() == manifest.tags_sha256
        else:
            whole_matches = digest.hexdigest() == manifest.sha256
        if written != manifest.size or not whole_matches:
            what = "SHA-256" if tags is None else "chunk tags"
            raise IntegrityError(
                f"version {version.version_id}: content does not match the manifest's {what}"
            )
    return FetchResult(dest, written, manifest.sha256, time.monotonic() - started)
