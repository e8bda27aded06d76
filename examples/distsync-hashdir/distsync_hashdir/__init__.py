"""An example distsync storage plugin: a directory with hashed subdirectories.

An object with key ``K`` lives at ``ROOT/<first Fanout hex digits of sha256(K)>/<K escaped>``
(``/`` and ``%`` escaped, so a key is one file name). Everything distsync promises — contents
and names encrypted, every byte verified before it is placed, rollback protection — comes
from the engine; the plugin only has to be an honest object store:

- a new object appears whole or not at all: it is written to a temp file and published with
  ``link()`` (``create``: fails if the key exists — an atomic create-if-absent) or
  ``rename()`` (``put`` and large objects);
- ``get`` never reads more than its limit; ``list_after`` returns keys in order;
- failures are ``StorageError`` / ``NotFoundError`` with one line and no secret.

It uses only the public interface ``distsync.storage.api`` (and setup's option types).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from distsync.storage.api import (
    SMALL_OBJECT_LIMIT,
    STORAGE_API,
    Capabilities,
    Config,
    NotFoundError,
    StorageError,
    UsageError,
    set_up_store,
    too_large,
)

if TYPE_CHECKING:  # what setup() is given and returns (distsync.provision.options)
    from distsync.provision.options import Say, SetupOptions, SetupResult

__all__ = ["BACKEND", "HashDirStore"]

_TEMP = ".tmp-"


class HashDirStore:
    def __init__(self, root: Path, fanout: int = 2) -> None:
        self.root = root
        self.fanout = fanout
        self.description = f"hashed directory {root}"

    # -- layout -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[: self.fanout]
        return self.root / digest / quote(key, safe="")

    def _error(self, action: str, key: str, exc: OSError) -> StorageError:
        if isinstance(exc, FileNotFoundError):
            return NotFoundError(f"{self.description}: {key} does not exist")
        return StorageError(f"{self.description}: cannot {action} {key}: {exc.strerror}")

    def _temp(self, key: str) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f"{_TEMP}{secrets.token_hex(8)}")

    def _publish(self, key: str, temp: Path, *, exclusive: bool) -> bool:
        try:
            with open(temp, "rb+") as handle:
                os.fsync(handle.fileno())
            if exclusive:
                try:
                    os.link(temp, self._path(key))  # fails if the key exists: atomic
                except FileExistsError:
                    return False
            else:
                os.replace(temp, self._path(key))
            return True
        except OSError as exc:
            raise self._error("write", key, exc) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    # -- writing ------------------------------------------------------------------------

    def create(self, key: str, data: bytes) -> bool:
        return self._publish(key, self._write_temp(key, data), exclusive=True)

    def put(self, key: str, data: bytes) -> None:
        self._publish(key, self._write_temp(key, data), exclusive=False)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass  # a missing key is no error
        except OSError as exc:
            raise self._error("delete", key, exc) from None

    def _write_temp(self, key: str, data: bytes) -> Path:
        try:
            temp = self._temp(key)
            temp.write_bytes(data)
        except OSError as exc:
            raise self._error("write", key, exc) from None
        return temp

    def writer(self, key: str) -> _Writer:
        try:
            return _Writer(self, key, self._temp(key))
        except OSError as exc:
            raise self._error("write", key, exc) from None

    # -- reading ------------------------------------------------------------------------

    def get(self, key: str, *, limit: int = SMALL_OBJECT_LIMIT) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > limit:
                    raise too_large(self.description, key, size, limit)
                data = handle.read(limit + 1)
        except OSError as exc:
            raise self._error("read", key, exc) from None
        if len(data) > limit:
            raise too_large(self.description, key, None, limit)
        return data

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
            return None if since == "" else ""
        except OSError as exc:
            raise self._error("read", key, exc) from None
        # Every put renames a new inode into place: (inode, mtime, size) changes.
        tag = f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
        return None if tag == since else tag

    def list_after(self, prefix: str, start_after: str) -> Iterator[str]:
        keys = []
        try:
            buckets = [d for d in os.scandir(self.root) if d.is_dir(follow_symlinks=False)]
            for bucket in buckets:
                for entry in os.scandir(bucket.path):
                    if entry.name.startswith(_TEMP) or not entry.is_file(follow_symlinks=False):
                        continue
                    key = unquote(entry.name)
                    if key.startswith(prefix) and key > start_after:
                        keys.append(key)
        except OSError as exc:
            raise self._error("list", prefix, exc) from None
        return iter(sorted(keys))


class _Writer:
    """A large object: a temp file beside its key, renamed into place by ``commit``."""

    def __init__(self, store: HashDirStore, key: str, temp: Path) -> None:
        self.store, self.key, self.temp = store, key, temp
        self.handle = open(temp, "xb")  # noqa: SIM115 - closed by commit or abort

    def write(self, data: bytes | memoryview) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            raise self.store._error("write", self.key, exc) from None

    def commit(self) -> None:
        self.handle.close()
        self.store._publish(self.key, self.temp, exclusive=False)

    def abort(self) -> None:
        self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


class _HashDirBackend:
    """The ``distsync.storage`` entry point ``HashDir`` (distsync.storage.api.StorageBackend)."""

    api = STORAGE_API
    capabilities = Capabilities(
        atomic_create=True,  # link() fails when the key exists
        conditional_head=True,  # changed() is one stat()
        ranged_reads=True,
        presigned_urls=False,
        delete=True,
    )
    state_key = "HashDir"

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            if key != "Fanout":
                raise cfg.error(f"Plugin.HashDir.{key}", "unknown key (HashDir takes Fanout)")
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4:
                raise cfg.error("Plugin.HashDir.Fanout", "must be an integer from 1 to 4")

    def open(self, cfg: Config) -> HashDirStore:
        root = Path(os.path.expanduser(cfg.storage_bucket))
        if not root.is_absolute():
            root = cfg.path.parent / root
        return HashDirStore(root, cfg.plugin_table("HashDir").get("Fanout", 2))

    def setup(
        self,
        options: SetupOptions,
        upload_path: Path,
        daemon_path: Path,
        output_dir: str,
        say: Say,
        warn: Say,
    ) -> SetupResult:
        if not options.bucket:
            raise UsageError("--storage hashdir needs --bucket DIR (the directory to use)")
        root = Path(os.path.expanduser(options.bucket)).absolute()
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"cannot create {root}: {exc.strerror}") from None
        return set_up_store(
            options, upload_path, daemon_path, output_dir,
            storage="HashDir", bucket=str(root), store=HashDirStore(root),
            capabilities=self.capabilities,
        )

    def in_place(self, options: SetupOptions, uploader: Config, daemon: Config) -> bool:
        return False  # setup always writes a new store here


BACKEND = _HashDirBackend()
