"""Fetch one artifact version: ranged reads, chunk-by-chunk verification, atomic placement.

The v3 format is seekable, so the ciphertext is read in batches of whole chunks, in parallel,
and each chunk is authenticated before its plaintext is written. The plaintext lands in a temp
file beside the destination; only when every chunk and the manifest's SHA-256 match is it
fsynced and renamed into place.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distsync.crypto import stream
from distsync.errors import DistsyncError, IntegrityError
from distsync.fsutil import atomic_output
from distsync.manifest import Version
from distsync.storage.base import Store
from distsync.transfer.parallel import ordered_map

__all__ = ["FetchResult", "Interrupted", "fetch_version"]

_BATCH_BYTES = 8 << 20


class Interrupted(DistsyncError):
    """A stop was requested while a transfer was under way."""

    exit_code = 130


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str
    seconds: float


def fetch_version(
    store: Store,
    secret: bytes,
    version: Version,
    dest: Path,
    *,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> FetchResult:
    started = time.monotonic()
    manifest = version.manifest
    key = manifest.object_key
    if manifest.format != "v3":
        raise IntegrityError(
            f"version {version.version_id}: unsupported format {manifest.format!r}"
        )
    actual_size = store.size(key)
    expected = stream.ciphertext_size(manifest.size, manifest.chunk_size)
    if actual_size != manifest.object_size or expected != manifest.object_size:
        raise IntegrityError(
            f"version {version.version_id}: stored object is {actual_size} bytes, "
            f"the manifest says {manifest.object_size}"
        )
    decryptor = stream.StreamDecryptor(secret, store.get_range(key, 0, stream.HEADER_LEN))
    if decryptor.header.chunk_size != manifest.chunk_size:
        raise IntegrityError(f"version {version.version_id}: chunk size differs from the manifest")

    count = stream.chunk_count(manifest.size, manifest.chunk_size)
    sealed_full = manifest.chunk_size + stream.CHUNK_OVERHEAD
    per_batch = max(1, _BATCH_BYTES // sealed_full)
    batches = [range(first, min(first + per_batch, count)) for first in range(0, count, per_batch)]

    def fetch_batch(indices: range) -> list[bytes]:
        if should_stop():
            raise Interrupted("stopped before the transfer finished")
        start = decryptor.chunk_offset(indices[0])
        end = (
            manifest.object_size
            if indices[-1] == count - 1
            else decryptor.chunk_offset(indices[-1] + 1)
        )
        data = memoryview(store.get_range(key, start, end - start))
        if len(data) != end - start:
            raise IntegrityError(f"version {version.version_id}: stored object is truncated")
        plain = []
        for n, index in enumerate(indices):
            piece = data[n * sealed_full : (n + 1) * sealed_full]
            plain.append(decryptor.open_chunk(index, piece, final=index == count - 1))
        return plain

    digest = hashlib.sha256()
    written = 0
    with atomic_output(dest, mode=manifest.mode & 0o7777) as out:
        for chunks in ordered_map(fetch_batch, batches, workers=workers, inflight=2 * workers):
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                written += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        if written != manifest.size or digest.hexdigest() != manifest.sha256:
            raise IntegrityError(
                f"version {version.version_id}: content does not match the manifest's SHA-256"
            )
    return FetchResult(dest, written, digest.hexdigest(), time.monotonic() - started)
