"""What a daemon has installed, and the pure rules that decide what to install next.

The rules take no I/O and no clock (python-tuf's trusted_metadata_set is the model):
``plan_installs`` is fed the state and the versions found, and answers which to install.
``StateFile`` persists the state atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distsync.errors import LocalIOError
from distsync.fsutil import atomic_output, local_io_error
from distsync.manifest import Version

__all__ = ["DaemonState", "Installed", "StateFile", "plan_installs"]


@dataclass(frozen=True)
class Installed:
    version: int
    sha256: str
    size: int


@dataclass
class DaemonState:
    last_seq: int = 0
    marker_tag: str | None = None
    installed: dict[str, Installed] = field(default_factory=dict)
    # Versions whose install failed for a passing reason (store or disk): retried each cycle.
    retry: dict[str, int] = field(default_factory=dict)
    # The newest genuine version the log holds for each name, so that a name held back (by a
    # pin since removed, or a deleted file) returns to it without listing the log again.
    newest: dict[str, int] = field(default_factory=dict)
    # Versions whose content failed verification: never fetched again.
    rejected: list[int] = field(default_factory=list)

    def note_found(self, versions: Iterable[Version]) -> None:
        for version in versions:
            name = version.manifest.name
            self.newest[name] = max(self.newest.get(name, 0), version.seq)

    def behind(self, pins: Mapping[str, str]) -> dict[str, int]:
        """Names whose installed version is not the one they should have: name -> seq.

        That is the pinned version for a pinned name, else the newest one in the log if it is
        newer than what is installed. Versions whose content was rejected are not wanted.
        """
        targets = dict(self.newest)
        targets.update({name: int(pin) for name, pin in pins.items()})
        wanted: dict[str, int] = {}
        for name, target in targets.items():
            current = self.installed.get(name)
            if target in self.rejected or (current is not None and current.version == target):
                continue
            if name in pins or current is None or current.version < target:
                wanted[name] = target
        return wanted


def plan_installs(
    state: DaemonState, found: Iterable[Version], pins: Mapping[str, str]
) -> list[Version]:
    """Which versions to install, one per name, oldest log entry first.

    A name gets its newest version by sequence number, and only if that is newer than what is
    installed (rollback protection: a replayed or late older upload never replaces a newer
    install). A pinned name gets exactly its pinned version, older or not.
    """
    best: dict[str, Version] = {}
    for version in found:
        name = version.manifest.name
        pin = pins.get(name)
        if pin is not None:
            if version.version_id != pin:
                continue
        else:
            current = state.installed.get(name)
            if current is not None and version.seq <= current.version:
                continue
        if name not in best or version.seq > best[name].seq:
            best[name] = version
    for name, version in list(best.items()):
        current = state.installed.get(name)
        if current is not None and current.version == version.seq:
            del best[name]
    return sorted(best.values(), key=lambda version: version.seq)


class StateFile:
    """The daemon's state as JSON in its state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> DaemonState:
        try:
            raw = json.loads(self.path.read_text())
            return DaemonState(
                last_seq=int(raw["last_seq"]),
                marker_tag=raw.get("marker_tag"),
                installed={name: Installed(**item) for name, item in raw["installed"].items()},
                retry={name: int(seq) for name, seq in raw.get("retry", {}).items()},
                newest={name: int(seq) for name, seq in raw.get("newest", {}).items()},
                rejected=[int(seq) for seq in raw.get("rejected", [])],
            )
        except FileNotFoundError:
            return DaemonState()
        except OSError as exc:
            raise local_io_error("read", self.path, exc) from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise LocalIOError(
                f"{self.path} is not a distsync state file (move it away to start afresh)"
            ) from None

    def save(self, state: DaemonState) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise local_io_error("create", self.path.parent, exc) from None
        body = json.dumps(asdict(state), indent=1, sort_keys=True).encode()
        with atomic_output(self.path, mode=0o600) as out:
            out.write(body)
