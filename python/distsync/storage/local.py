"""``Storage = "Local"``: a directory plays the bucket (also works on a shared file system).

Keys map to paths below the root. Every write lands in a temp file first; ``create`` publishes
it with ``link()``, which fails if the target exists — the directory's conditional create —
and ``put`` with ``rename()``. Readers therefore never see a partial object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from distsync.errors import NotFoundError, StorageError
from distsync.fsutil import TEMP_SUFFIX, fsync_dir

__all__ = ["LocalStore"]


class _LocalWriter:
    def __init__(self, store: LocalStore, key: str) -> None:
        self._store = store
        self._key = key
        self._handle, self._tmp = store._temp_for(key)

    def write(self, data: bytes | memoryview) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.abort()
            raise self._store._error("write", self._key, exc) from None

    def commit(self) -> None:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._store._publish(self._tmp, self._key, exclusive=True)
        except OSError as exc:
            self.abort()
            raise self._store._error("write", self._key, exc) from None

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"directory {self.root}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"invalid store key {key!r}")
        return self.root.joinpath(*parts)

    def _error(self, action: str, key: str, exc: OSError) -> StorageError:
        if isinstance(exc, FileNotFoundError) and action == "read":
            return NotFoundError(f"{self.description}: no object {key}")
        return StorageError(f"{self.description}: cannot {action} {key}: {exc.strerror or exc}")

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise StorageError(f"{self.description} does not exist (run `distsync setup`)")

    def _temp_for(self, key: str) -> tuple[BinaryIO, Path]:
        self._check_root()
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
            )
        except OSError as exc:
            raise self._error("write", key, exc) from None
        return os.fdopen(fd, "wb"), Path(name)

    def _publish(self, tmp: Path, key: str, *, exclusive: bool) -> bool:
        path = self._path(key)
        try:
            if exclusive:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
            fsync_dir(path.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _write_whole(self, key: str, data: bytes, *, exclusive: bool) -> bool:
        handle, tmp = self._temp_for(key)
        try:
            with handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return self._publish(tmp, key, exclusive=exclusive)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._error("write", key, exc) from None

    def create(self, key: str, data: bytes) -> bool:
        return self._write_whole(key, data, exclusive=True)

    def put(self, key: str, data: bytes) -> None:
        self._write_whole(key, data, exclusive=False)

    def writer(self, key: str) -> _LocalWriter:
        return _LocalWriter(self, key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise self._error("read", key, exc) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(start)
                return handle.read(length)
        except OSError as exc:
            raise self._error("read", key, exc) from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except OSError as exc:
            raise self._error("read", key, exc) from None

    def changed(self, key: str, since: str | None) -> str | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            self._check_root()
            return None if since == "" else ""
        except OSError as exc:
            raise self._error("read", key, exc) from None
        # Every put() renames a new inode into place, so (inode, mtime, size) changes.
        tag = hashlib.sha256(f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()[:32]
        return None if tag == since else tag

    def list_after(self, prefix: str, start_after: str) -> Iterator[str]:
        directory, _slash, leaf_prefix = prefix.rpartition("/")
        base = self._path(directory) if directory else self.root
        self._check_root()
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(base)
                if entry.name.startswith(leaf_prefix)
                and not entry.name.endswith(TEMP_SUFFIX)
                and not entry.name.startswith(".")
            )
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("list", prefix, exc) from None
        head = f"{directory}/" if directory else ""
        for name in names:
            key = head + name
            if key > start_after:
                yield key
