"""Where a release lives on disk, and the file-system steps that must be atomic::

    Dir/current                 symlink -> releases/<version>-<name>, replaced with one rename
    Dir/releases/<v>-<name>/    complete releases only: each appears by one rename
    Dir/.distsync/tmp/          unpacking in progress, and releases being deleted
    Dir/.distsync/incoming/     downloads (a crash leaves a part file that is continued)
    Dir/.distsync/requests/     rollback/resume requests from `distsync` commands
    Dir/.distsync/state.json    what the daemon knows about this release
    Dir/.distsync/lock          held by the daemon that manages the release

A crash at any point leaves ``current`` pointing at a complete release (or absent, before the
first one); ``clean()`` removes what an interrupted step left in ``tmp/`` and beside
``current``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

from distsync.fsutil import TEMP_SUFFIX, fsync_dir, local_io_error, remove_stale_temps
from distsync.logorder import parse_version_id, version_id

__all__ = ["ReleaseLayout"]

# <version id>-<name>: a version id (logorder) is digits, then maybe "." and a tag; a name
# never starts with ".", so the first "-" after the version id ends it.
_RELEASE_NAME = re.compile(r"(?P<version>[0-9]+(?:\.[0-9a-f]+)?)-(?P<name>[^/]+)")
# Temp and doomed directories in tmp/ add a suffix to a release's name: keep them in NAME_MAX.
_NAME_MAX = 255
_LINK_TEMP = ".current."


class ReleaseLayout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases = root / "releases"
        self.current_link = root / "current"
        self.work = root / ".distsync"
        self.tmp = self.work / "tmp"
        self.incoming = self.work / "incoming"
        self.requests = self.work / "requests"
        self.state_path = self.work / "state.json"
        self.lock_path = self.work / "lock"

    @staticmethod
    def dir_name(version: int, name: str) -> str:
        return f"{version_id(version)}-{name}"

    def _in_tmp(self, version: int, name: str, suffix: str) -> Path:
        """A directory in tmp/ named after the release, cut to fit with ``suffix``."""
        return self.tmp / (self.dir_name(version, name)[: _NAME_MAX - len(suffix)] + suffix)

    def release_path(self, version: int, name: str) -> Path:
        return self.releases / self.dir_name(version, name)

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise local_io_error("create", self.root, exc) from None
        for directory in (
            self.releases,
            self.work,
            self.tmp,
            self.incoming,
            self.requests,
        ):
            try:
                directory.mkdir(mode=0o755, exist_ok=True)
            except OSError as exc:
                raise local_io_error("create", directory, exc) from None

    # -- reading ------------------------------------------------------------------------

    def kept(self) -> dict[int, str]:
        """The complete releases on disk: version -> artifact name."""
        found: dict[int, str] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in self.releases.iterdir():
                match = _RELEASE_NAME.fullmatch(entry.name)
                version = parse_version_id(match["version"]) if match else None
                if match and version is not None and entry.is_dir() and not entry.is_symlink():
                    found[version] = match["name"]
        return found

    def current(self) -> tuple[int, str] | None:
        """The release ``current`` points at, if it is one of ours and exists."""
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        head, _sep, leaf = target.rpartition("/")
        match = _RELEASE_NAME.fullmatch(leaf)
        version = parse_version_id(match["version"]) if match else None
        if head != "releases" or match is None or version is None:
            return None
        if not (self.releases / leaf).is_dir():
            return None
        return version, match["name"]

    # -- atomic steps ---------------------------------------------------------------------

    def new_temp_dir(self, version: int, name: str) -> Path:
        path = self._in_tmp(version, name, f".{secrets.token_hex(4)}")
        try:
            path.mkdir(mode=0o755)
        except OSError as exc:
            raise local_io_error("create", path, exc) from None
        return path

    def commit(self, temp: Path, version: int, name: str) -> Path:
        """Move a fully written (and fsynced) temp directory into ``releases/``."""
        final = self.release_path(version, name)
        try:
            if final.exists():  # left by an interrupted prune or an older attempt
                self.remove(version, name)
            os.rename(temp, final)
            fsync_dir(self.releases)
            fsync_dir(self.tmp)
        except OSError as exc:
            raise local_io_error("move into place", final, exc) from None
        return final

    def switch(self, release: tuple[int, str] | None) -> None:
        """Point ``current`` at ``release`` (None: remove it) in one atomic step."""
        try:
            if release is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.current_link)
            else:
                temp = self.root / f"{_LINK_TEMP}{secrets.token_hex(4)}{TEMP_SUFFIX}"
                os.symlink(f"releases/{self.dir_name(*release)}", temp)
                try:
                    os.replace(temp, self.current_link)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temp)
                    raise
            fsync_dir(self.root)
        except IsADirectoryError:
            raise local_io_error(
                "replace", self.current_link, OSError(0, "it is a directory, not a symlink")
            ) from None
        except OSError as exc:
            raise local_io_error("switch", self.current_link, exc) from None

    def remove(self, version: int, name: str) -> None:
        """Delete a release: first out of ``releases/`` in one rename, then its files, so a
        crash never leaves half a release where a rollback could choose it."""
        doomed = self._in_tmp(version, name, f".{secrets.token_hex(4)}.removing")
        try:
            os.rename(self.release_path(version, name), doomed)
            fsync_dir(self.releases)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise local_io_error("remove", self.release_path(version, name), exc) from None
        shutil.rmtree(doomed, ignore_errors=True)

    def clean(self) -> list[Path]:
        """Remove what an interrupted unpack, switch, prune or download left behind."""
        removed: list[Path] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in self.tmp.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
        with contextlib.suppress(FileNotFoundError):
            for entry in self.root.iterdir():
                if entry.name.startswith(_LINK_TEMP) and entry.name.endswith(TEMP_SUFFIX):
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
        removed.extend(remove_stale_temps(self.incoming))
        return removed
