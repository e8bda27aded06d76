"""``Storage = "Local"``: a directory plays the bucket (also works on a shared file system).

Keys map to paths below the root. Every write lands in a temp file first; ``create`` publishes
it with ``link()``, which fails if the target exists — the directory's conditional create —
and ``put`` with ``rename()``. Readers therefore never see a partial object.

Whoever can write to the directory can plant anything in it, so below its root the store trusts
nothing but plain directories and regular files:

- No symbolic link below the root is followed, for reading or for writing. Each directory on a
  key's path is opened relative to its parent's descriptor with ``O_NOFOLLOW`` (``openat``),
  and files are created, linked, renamed and removed by name in that descriptor, so a link
  planted at ``log/`` or ``objects/`` cannot make the store read or write outside its root: it
  is an error that names it. (The root itself may be a link: the operator chose it.)
- Only regular files are objects. What stands at a key is checked with ``lstat`` before it is
  opened (a device is never opened), opened with ``O_NONBLOCK`` (a FIFO cannot block the
  reader) and checked again with ``fstat``. Anything else raises NotAnObjectError for that key
  alone, and ``list_after`` leaves it out.
- ``get`` refuses an object over its limit by its size, before reading, and reads at most
  ``limit + 1`` bytes (a file that grows meanwhile is refused too).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from distsync.errors import NotAnObjectError, NotFoundError, StorageError
from distsync.fsutil import TEMP_SUFFIX
from distsync.plugin_config import no_settings
from distsync.storage.api import STORAGE_API, Capabilities
from distsync.storage.base import SMALL_OBJECT_LIMIT, StoredObject, too_large

if TYPE_CHECKING:
    from distsync.config import Config
    from distsync.provision.options import Say, SetupOptions, SetupResult

__all__ = ["BACKEND", "LocalStore"]

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class _Staged:
    """A temp file being written in its key's directory, which is held by descriptor."""

    def __init__(self, dir_fd: int, name: str, handle: BinaryIO) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.handle = handle

    def discard(self) -> None:
        """Close everything and remove the temp file if it is still there (idempotent)."""
        with contextlib.suppress(OSError):
            self.handle.close()
        if self.dir_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.name, dir_fd=self.dir_fd)
            os.close(self.dir_fd)
            self.dir_fd = -1


class _LocalWriter:
    def __init__(self, store: LocalStore, key: str) -> None:
        self._store = store
        self._key = key
        self._staged = store._stage(key)

    def write(self, data: bytes | memoryview) -> int:
        try:
            return self._staged.handle.write(data)
        except OSError as exc:
            self.abort()
            raise self._store._error("write", self._key, exc) from None

    def commit(self) -> None:
        try:
            self._store._publish(self._staged, self._key, exclusive=True)
        except OSError as exc:
            self.abort()
            raise self._store._error("write", self._key, exc) from None

    def abort(self) -> None:
        self._staged.discard()


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"directory {self.root}"

    # -- paths, without following links ----------------------------------------------------

    @staticmethod
    def _parts(key: str) -> list[str]:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"invalid store key {key!r}")
        return parts

    def _error(self, action: str, key: str, exc: OSError) -> StorageError:
        if isinstance(exc, FileNotFoundError) and action == "read":
            return NotFoundError(f"{self.description}: no object {key}")
        return StorageError(f"{self.description}: cannot {action} {key}: {exc.strerror or exc}")

    def _missing_root(self) -> StorageError:
        return StorageError(f"{self.description} does not exist (run `distsync setup`)")

    def _open_dirs(self, action: str, key: str, dirs: Sequence[str], *, create: bool) -> int:
        """A descriptor of the directory ``root/dirs...``, reached without following a link.

        FileNotFoundError when a directory is missing (and ``create`` is off); StorageError
        naming the culprit when one is a link or not a directory.
        """
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing_root() from None
        except OSError as exc:
            raise self._error(action, key, exc) from None
        for depth, part in enumerate(dirs):
            try:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                problem = self._dir_problem(fd, part, exc)
                os.close(fd)
                if problem is None:
                    raise
                where = "/".join(dirs[: depth + 1])
                raise StorageError(
                    f"{self.description}: cannot {action} {key}: {where} is {problem}"
                ) from None
            os.close(fd)
            fd = child
        return fd

    @staticmethod
    def _dir_problem(parent_fd: int, name: str, exc: OSError) -> str | None:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            return None
        try:
            mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return (
                "a symbolic link, and a Local store follows none below its root "
                "(replace it by a directory)"
            )
        return f"{_kind(mode)}, not a directory"

    def _not_an_object(self, key: str, mode: int) -> NotAnObjectError:
        return NotAnObjectError(
            f"{self.description}: {key} is {_kind(mode)}, not a regular file; "
            "a Local store reads only regular files"
        )

    def _lstat(self, key: str) -> os.stat_result:
        """The object's own status (never a link's target); OSError when it is missing."""
        *dirs, leaf = self._parts(key)
        dir_fd = self._open_dirs("read", key, dirs, create=False)
        try:
            return os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def _open_object(self, key: str) -> Iterator[tuple[int, os.stat_result]]:
        """The regular file at ``key``, open for reading, with its status."""
        *dirs, leaf = self._parts(key)
        try:
            dir_fd = self._open_dirs("read", key, dirs, create=False)
            try:
                mode = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False).st_mode
                if not stat.S_ISREG(mode):
                    raise self._not_an_object(key, mode)
                fd = os.open(leaf, _READ_FLAGS, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link since the lstat
                raise self._not_an_object(key, stat.S_IFLNK) from None
            raise self._error("read", key, exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped since the lstat
                raise self._not_an_object(key, st.st_mode)
            yield fd, st
        finally:
            os.close(fd)

    # -- writing ---------------------------------------------------------------------------

    def _stage(self, key: str) -> _Staged:
        *dirs, leaf = self._parts(key)
        dir_fd = self._open_dirs("write", key, dirs, create=True)
        try:
            while True:
                name = f".{leaf}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
                with contextlib.suppress(FileExistsError):
                    fd = os.open(name, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
                    return _Staged(dir_fd, name, os.fdopen(fd, "wb"))
        except OSError as exc:
            os.close(dir_fd)
            raise self._error("write", key, exc) from None

    def _publish(self, staged: _Staged, key: str, *, exclusive: bool) -> bool:
        """Flush the temp file and put it at ``key``; False if ``exclusive`` and it exists."""
        leaf = self._parts(key)[-1]
        try:
            staged.handle.flush()
            os.fsync(staged.handle.fileno())
            staged.handle.close()
            if exclusive:
                try:
                    os.link(
                        staged.name,
                        leaf,
                        src_dir_fd=staged.dir_fd,
                        dst_dir_fd=staged.dir_fd,
                        follow_symlinks=False,
                    )
                except FileExistsError:
                    return False
            else:
                os.replace(staged.name, leaf, src_dir_fd=staged.dir_fd, dst_dir_fd=staged.dir_fd)
            os.fsync(staged.dir_fd)
            return True
        finally:
            staged.discard()

    def _write_whole(self, key: str, data: bytes, *, exclusive: bool) -> bool:
        staged = self._stage(key)
        try:
            staged.handle.write(data)
            return self._publish(staged, key, exclusive=exclusive)
        except OSError as exc:
            staged.discard()
            raise self._error("write", key, exc) from None

    def create(self, key: str, data: bytes) -> bool:
        return self._write_whole(key, data, exclusive=True)

    def put(self, key: str, data: bytes) -> None:
        self._write_whole(key, data, exclusive=False)

    def writer(self, key: str) -> _LocalWriter:
        return _LocalWriter(self, key)

    def delete(self, key: str) -> None:
        """Remove the file at ``key`` by name in its directory (no link is followed); a key
        that is not there is no error."""
        *dirs, leaf = self._parts(key)
        try:
            dir_fd = self._open_dirs("delete", key, dirs, create=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("delete", key, exc) from None
        try:
            os.unlink(leaf, dir_fd=dir_fd)
            os.fsync(dir_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("delete", key, exc) from None
        finally:
            os.close(dir_fd)

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: str, *, limit: int = SMALL_OBJECT_LIMIT) -> bytes:
        with self._open_object(key) as (fd, st):
            if st.st_size > limit:
                raise too_large(self.description, key, st.st_size, limit)
            # One byte more than its size: getting it means the file grew since the fstat.
            want = st.st_size + 1
            try:
                data = _read_at_most(fd, want, 0)
                if len(data) == want:
                    data += _read_at_most(fd, limit + 1 - want, want)
            except OSError as exc:
                raise self._error("read", key, exc) from None
        if len(data) > limit:
            raise too_large(self.description, key, None, limit)
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        with self._open_object(key) as (fd, _st):
            try:
                return _read_at_most(fd, length, start)
            except OSError as exc:
                raise self._error("read", key, exc) from None

    def size(self, key: str) -> int:
        try:
            st = self._lstat(key)
        except OSError as exc:
            raise self._error("read", key, exc) from None
        if not stat.S_ISREG(st.st_mode):
            raise self._not_an_object(key, st.st_mode)
        return st.st_size

    def changed(self, key: str, since: str | None) -> str | None:
        try:
            st = self._lstat(key)
        except FileNotFoundError:
            return None if since == "" else ""
        except OSError as exc:
            raise self._error("read", key, exc) from None
        # Every put() renames a new inode into place, so (inode, mtime, size) changes. Only
        # the status is read: whatever stands there, the poller just lists the log.
        tag = hashlib.sha256(f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()[:32]
        return None if tag == since else tag

    def inventory(self, prefix: str) -> Iterator[StoredObject]:
        for key in self.list_after(prefix, ""):
            try:
                st = self._lstat(key)
            except FileNotFoundError:
                continue  # deleted since the listing
            except OSError as exc:
                raise self._error("list", key, exc) from None
            yield StoredObject(key, st.st_size, st.st_mtime)

    def list_after(self, prefix: str, start_after: str) -> Iterator[str]:
        directory, _slash, leaf_prefix = prefix.rpartition("/")
        try:
            dir_fd = self._open_dirs(
                "list", prefix, self._parts(directory) if directory else [], create=False
            )
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("list", prefix, exc) from None
        names: list[str] = []
        others: list[str] = []
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    name = entry.name
                    if (
                        not name.startswith(leaf_prefix)
                        or name.startswith(".")
                        or name.endswith(TEMP_SUFFIX)
                    ):
                        continue
                    if entry.is_file(follow_symlinks=False):
                        names.append(name)
                    else:
                        others.append(f"{name} ({_kind(_mode_of(entry))})")
        except OSError as exc:
            raise self._error("list", prefix, exc) from None
        finally:
            os.close(dir_fd)
        if others:
            # Not objects: left out, and said once per listing (one line however many).
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            log.warning(
                "%s: ignoring what is not a regular file under %s: %s%s",
                self.description,
                prefix,
                ", ".join(sorted(others)[:3]),
                more,
            )
        names.sort()
        head = f"{directory}/" if directory else ""
        for name in names:
            key = head + name
            if key > start_after:
                yield key


def _mode_of(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_mode
    except OSError:  # gone since the listing
        return 0


def _read_at_most(fd: int, length: int, offset: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
    pieces: list[bytes] = []
    remaining = length
    while remaining > 0:
        piece = os.pread(fd, remaining, offset)
        if not piece:
            break
        pieces.append(piece)
        offset += len(piece)
        remaining -= len(piece)
    return b"".join(pieces)


class _LocalBackend:
    """``Storage = "Local"`` as a ``distsync.storage`` plugin (distsync.storage.api)."""

    api = STORAGE_API
    # link() fails when the target exists: create-if-absent is atomic on any POSIX file system.
    capabilities = Capabilities(
        atomic_create=True,
        conditional_head=True,
        ranged_reads=True,
        presigned_urls=False,
        delete=True,
    )
    state_key = "Local"

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        no_settings(cfg, "Local", table)

    def open(self, cfg: Config) -> LocalStore:
        return LocalStore(cfg.local_store_root())

    def setup(
        self,
        options: SetupOptions,
        upload_path: Path,
        daemon_path: Path,
        output_dir: str,
        say: Say,
        warn: Say,
    ) -> SetupResult:
        from distsync.provision.local import run_local_setup

        return run_local_setup(options, upload_path, daemon_path, output_dir, say)

    def in_place(self, options: SetupOptions, uploader: Config, daemon: Config) -> bool:
        from distsync.provision.local import local_in_place

        return local_in_place(options, uploader, daemon)


BACKEND = _LocalBackend()
