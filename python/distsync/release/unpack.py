"""Fill a new release directory from a verified artifact, refusing anything unsafe.

An archive (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``, ``.tar.bz2``, ``.tar.zst``) is
unpacked; anything else is placed as one file. Unpacking is stricter than tarfile's ``data``
filter (which still runs on top where this Python has it): every member is checked *before*
it is written, and the whole archive is refused — not repaired — when one member has an
absolute path, a ``..`` component, a link leaving the directory, a path through a link, a
device or FIFO, a setuid/setgid bit, or a name seen twice. The caller unpacks into a temp
directory and deletes it on refusal, so a refused archive leaves nothing anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import errno
import gzip
import lzma
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from distsync.errors import DistsyncError
from distsync.fsutil import fsync_dir, local_io_error

__all__ = [
    "ARCHIVE_SUFFIXES",
    "ArchiveRejected",
    "archive_kind",
    "fill_release",
    "fsync_tree",
    "sync_tree",
]

# Name suffix -> tarfile's stream compression ("" plain, "zst" through zstandard).
ARCHIVE_SUFFIXES: dict[str, str] = {
    ".tar": "",
    ".tar.gz": "gz",
    ".tgz": "gz",
    ".tar.xz": "xz",
    ".tar.bz2": "bz2",
    ".tar.zst": "zst",
}


_STREAM_MODES: dict[str, Literal["r|", "r|gz", "r|bz2", "r|xz"]] = {
    "": "r|",
    "gz": "r|gz",
    "bz2": "r|bz2",
    "xz": "r|xz",
}


class ArchiveRejected(DistsyncError):
    """An artifact that cannot become a release: unsafe, corrupt, or not unpackable here."""

    exit_code = 3


def archive_kind(name: str) -> str | None:
    """The compression of an archive name (``""`` for plain tar), None for a non-archive."""
    lowered = name.lower()
    for suffix, kind in ARCHIVE_SUFFIXES.items():
        if lowered.endswith(suffix):
            return kind
    return None


def fill_release(artifact: Path, name: str, target: Path, *, unpack: bool = True) -> None:
    """Populate the empty directory ``target`` from ``artifact`` and fsync it all.

    ArchiveRejected for an archive that must not or cannot be unpacked; LocalIOError for a
    local file-system failure (disk full, permissions), which is worth retrying.
    """
    kind = archive_kind(name) if unpack else None
    if kind is None:
        try:
            os.link(artifact, target / name)
        except OSError as exc:
            raise local_io_error("place", target / name, exc) from None
    else:
        _unpack(artifact, kind, target)
    try:
        sync_tree(target)
    except OSError as exc:
        raise local_io_error("sync", target, exc) from None


def sync_tree(root: Path) -> None:
    """Make everything below ``root`` durable before it is renamed into place.

    One ``syncfs(2)`` of the file system where Linux has it (as dpkg does): fsyncing each file
    of a release with thousands of files took 20.8 s against 1.6 s for syncfs (4,000 files of
    512 bytes, on a loaded 2-core machine). Elsewhere, every file and directory is fsynced.
    """
    syncfs = _libc_syncfs()
    if syncfs is not None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    fsync_tree(root)


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        function: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return function


def fsync_tree(root: Path) -> None:
    """fsync every regular file and directory below ``root`` (directories after contents)."""
    for directory, _dirs, files in os.walk(root, topdown=False):
        for file_name in files:
            path = os.path.join(directory, file_name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(Path(directory))


def _unpack(artifact: Path, kind: str, target: Path) -> None:
    checker = _MemberCheck()
    try:
        with open(artifact, "rb") as raw, _tar_stream(raw, kind) as tar:
            for member in tar:
                relative = checker.check(member)
                if relative is None:
                    continue  # the archive's own root ("./")
                _extract(tar, member, relative, target)
    except ArchiveRejected:
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as exc:
        raise ArchiveRejected(f"not a valid {kind or 'tar'} archive: {exc}") from None
    except OSError as exc:
        # Decompressors report bad data as an OSError without errno (bz2, zstandard);
        # the file system always sets one.
        if exc.errno is None:
            raise ArchiveRejected(f"not a valid {kind} archive: {exc}") from None
        raise local_io_error("unpack into", target, exc) from None
    if not checker.members:
        raise ArchiveRejected("the archive is empty")


@contextlib.contextmanager
def _tar_stream(raw: IO[bytes], kind: str) -> Iterator[tarfile.TarFile]:
    """tarfile in stream mode (one pass, no seeking) over the right decompressor."""
    if kind != "zst":
        with tarfile.open(fileobj=raw, mode=_STREAM_MODES[kind]) as tar:
            yield tar
        return
    try:
        import zstandard
    except ImportError:
        raise ArchiveRejected(
            "unpacking .tar.zst needs the zstandard package: pip install 'distsync[zstd]'"
        ) from None
    reader = zstandard.ZstdDecompressor().stream_reader(raw)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            yield tar
    except zstandard.ZstdError as exc:
        raise ArchiveRejected(f"not a valid zst archive: {exc}") from None
    finally:
        reader.close()  # type: ignore[no-untyped-call]


class _MemberCheck:
    """The rules every member must pass before anything of it is written."""

    def __init__(self) -> None:
        self.members = 0
        self.seen: set[str] = set()
        self.files: set[str] = set()
        self.links: set[str] = set()
        self.dirs: set[str] = set()  # explicit directories and every parent of a member
        self.traversed: set[str] = set()  # paths that some link's target walks through

    def check(self, member: tarfile.TarInfo) -> str | None:
        """The member's normalised relative path; None for the archive root itself."""
        name = member.name
        relative = _relative(name, "path")
        if relative is None:
            if not member.isdir():
                raise ArchiveRejected(f"member {name!r} has an empty path")
            return None
        self.members += 1
        if relative in self.seen:
            raise ArchiveRejected(f"member {name!r} appears twice")
        parents = _prefixes(relative)
        for parent in parents:
            if parent in self.links:
                raise ArchiveRejected(f"member {name!r} goes through the link {parent!r}")
            if parent in self.files:
                raise ArchiveRejected(f"member {name!r} lies below the file {parent!r}")
        if not member.isdir() and relative in self.dirs:
            raise ArchiveRejected(f"member {name!r} replaces a directory")
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise ArchiveRejected(f"member {name!r} has a setuid or setgid bit")
        if member.issym():
            self._check_symlink(member, relative)
        elif member.islnk():
            target = _relative(member.linkname, "hard link target")
            if target not in self.files:
                raise ArchiveRejected(
                    f"hard link {name!r} points at {member.linkname!r}, not an earlier file"
                )
            self.files.add(relative)
        elif member.isreg():
            self.files.add(relative)
        elif member.isdir():
            self.dirs.add(relative)
        else:
            kind = "device" if (member.ischr() or member.isblk()) else "special file"
            raise ArchiveRejected(f"member {name!r} is a {kind}")
        self.dirs.update(parents)
        self.seen.add(relative)
        return relative

    def _check_symlink(self, member: tarfile.TarInfo, relative: str) -> None:
        """A link must point inside, lexically, and no link may be walked through by another
        link's target (the kernel resolves ``a/link/..`` where the link points, not lexically)."""
        base = posixpath.dirname(relative)
        if _relative(member.linkname, "link target", base=base) is None:
            raise ArchiveRejected(f"link {member.name!r} points at the release directory itself")
        if relative in self.traversed:
            raise ArchiveRejected(f"link {member.name!r} lies on another link's target path")
        walked = [p for p in posixpath.join(base, member.linkname).split("/") if p not in ("", ".")]
        stack: list[str] = []
        for index, part in enumerate(walked):
            if part == "..":
                stack.pop()  # _relative has shown the path never climbs above the root
                continue
            stack.append(part)
            if index == len(walked) - 1:
                break  # a link to a link (libfoo.so -> libfoo.so.1) is fine
            prefix = "/".join(stack)
            if prefix in self.links:
                raise ArchiveRejected(f"link {member.name!r} points through the link {prefix!r}")
            self.traversed.add(prefix)
        self.links.add(relative)


def _prefixes(relative: str) -> list[str]:
    parts = relative.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def _relative(path: str, what: str, *, base: str | None = None) -> str | None:
    """``path`` as a clean relative path inside the release (None: the release root).

    Refuses absolute paths and any path that leaves the directory. A member's own path may
    not contain ``..`` at all; a symbolic link's target (``base``: the link's directory) may,
    as long as it stays inside.
    """
    if "\0" in path or not path:
        raise ArchiveRejected(f"{what} {path!r} is empty or has a NUL byte")
    if path.startswith("/") or path.startswith("\\"):
        raise ArchiveRejected(f"{what} {path!r} is absolute")
    if base is None and ".." in path.split("/"):
        raise ArchiveRejected(f"{what} {path!r} has a '..' component")
    base = base or ""
    joined = posixpath.normpath(posixpath.join(base, path))
    if joined == ".." or joined.startswith("../"):
        raise ArchiveRejected(f"{what} {path!r} leaves the release directory")
    return None if joined == "." else joined


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, relative: str, target: Path) -> None:
    """Write one checked member: no owner taken from the archive, no group/other write."""
    safe = copy.copy(member)
    safe.name = relative
    if member.islnk():
        safe.linkname = posixpath.normpath(member.linkname)
    safe.uid = safe.gid = -1
    safe.uname = safe.gname = ""
    if member.isdir():
        safe.mode = (member.mode & 0o755) | 0o700
    elif not member.issym():
        safe.mode = (member.mode & 0o755) | 0o600
    kwargs: dict[str, Any] = {"set_attrs": True}
    if hasattr(tarfile, "data_filter"):
        # Python 3.12, and 3.8.17+/3.9.17+/3.10.12+/3.11.4+: tarfile's own checks on top.
        kwargs["filter"] = "data"
    try:
        tar.extract(safe, target, **kwargs)
    except tarfile.TarError as exc:  # the data filter's refusals (FilterError) among them
        raise ArchiveRejected(f"member {member.name!r}: {exc}") from None
    except FileExistsError:
        raise ArchiveRejected(f"member {member.name!r} collides with an earlier one") from None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.EISDIR):
            raise ArchiveRejected(f"member {member.name!r} collides with an earlier one") from None
        raise
