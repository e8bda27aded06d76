"""File-system effects that must never leave a half-written file at a destination path.

``atomic_output`` writes into a temp file in the destination's own directory (so the final
``rename`` is atomic on one file system), fsyncs it, renames it over the destination and fsyncs
the directory. On any failure the temp file is removed and the destination is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from distsync.errors import LocalIOError

__all__ = [
    "PART_SUFFIX",
    "TEMP_SUFFIX",
    "ReadErrors",
    "atomic_output",
    "fsync_dir",
    "local_io_error",
    "remove_stale_temps",
]

TEMP_SUFFIX = ".distsync-tmp"
# A download in progress that a crash may leave; the next fetch of that version continues it.
PART_SUFFIX = ".distsync-part"


def local_io_error(action: str, path: os.PathLike[str] | str, exc: OSError) -> LocalIOError:
    """One clear line for an OSError, e.g. 'cannot write /x: no space left on device'."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EFBIG:
        reason = "file too large (a size limit of the file system or process)"
    return LocalIOError(f"cannot {action} {path}: {reason.lower()}")


class ReadErrors:
    """Wrap a source so a failing read names the source, not the file being written."""

    def __init__(self, handle: BinaryIO, name: os.PathLike[str] | str) -> None:
        self._handle = handle
        self._name = name

    def read(self, size: int = -1) -> bytes:
        try:
            return self._handle.read(size)
        except OSError as exc:
            raise local_io_error("read", self._name, exc) from None

    def readinto(self, buffer: memoryview) -> int | None:
        """Straight into the caller's (reused) buffer: no bytes object per read."""
        readinto = getattr(self._handle, "readinto", None)
        if readinto is None:
            raise io.UnsupportedOperation("readinto")
        try:
            n: int | None = readinto(buffer)
            return n
        except OSError as exc:
            raise local_io_error("read", self._name, exc) from None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(dest: Path, mode: int = 0o644, *, part: Path | None = None) -> Iterator[BinaryIO]:
    """Yield a writable binary file; on clean exit it replaces ``dest`` atomically.

    With ``part``, the temp file has that fixed name and is opened for update without
    truncation, so a file a crashed process left behind can be continued; it is still removed
    when the body raises (only a process that dies leaves it).
    """
    dest = Path(dest)
    directory = dest.parent if str(dest.parent) else Path(".")
    try:
        if part is None:
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{dest.name}.", suffix=TEMP_SUFFIX, dir=directory
            )
            tmp = Path(tmp_name)
        else:
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            tmp = part
    except OSError as exc:
        raise local_io_error("create a file in", directory, exc) from None
    try:
        with os.fdopen(fd, "r+b" if part is not None else "wb") as handle:
            try:
                yield handle
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
            except OSError as exc:
                raise local_io_error("write", dest, exc) from None
        try:
            os.replace(tmp, dest)
            fsync_dir(directory)
        except OSError as exc:
            raise local_io_error("replace", dest, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files a killed process left behind; returns what was removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed
