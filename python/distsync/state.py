"""What a daemon has installed, and the pure rules that decide what to install next.

The rules take no I/O and no clock (python-tuf's trusted_metadata_set is the model):
``plan_installs`` is fed the state and the versions found, and answers which to install;
time comes in as an argument wherever a rule needs it. ``StateFile`` persists the state
atomically (temp file, fsync, rename).

Three rules keep a bucket writer without the secret to denial of service, and only while the
damage stands:

- the cursor ``last_seq`` moves only over genuine entries, so junk in the log (or a gap) can
  never hide a later upload;
- a version that fails verification is retried with exponential backoff (``Rejection``), so
  a tamper that is undone later does not keep a genuine version out for good;
- the state is bound to the store's id (``follow_store``): a store re-created at the same
  place starts a new log, which is followed from its start, while the record of the store
  being removed (or an old one put back) never resets anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distsync.errors import IntegrityError, LocalIOError
from distsync.fsutil import atomic_output, local_io_error
from distsync.logorder import parse_version_id
from distsync.manifest import Version

__all__ = [
    "RETRY_CAP",
    "DaemonState",
    "Installed",
    "Rejection",
    "StateFile",
    "legacy_state_file_names",
    "pin_position",
    "plan_installs",
    "retry_delay",
    "state_file_name",
]

# Rejected versions are retried after 1, 2, 4, ... poll intervals, at most this far apart.
RETRY_CAP = 3600.0


def retry_delay(attempts: int, base: float, cap: float = RETRY_CAP) -> float:
    """Seconds until the next try of a version rejected ``attempts`` times."""
    return min(cap, base * 2.0 ** min(max(attempts - 1, 0), 40))


@dataclass(frozen=True)
class Installed:
    version: int
    sha256: str
    size: int


@dataclass(frozen=True)
class Rejection:
    """A version that failed verification, and when to try it again.

    ``name`` is set when its manifest was genuine and its content failed (or was gone);
    None when the log entry itself did not verify.
    """

    attempts: int
    next_try: float  # wall-clock seconds
    name: str | None = None


@dataclass
class DaemonState:
    # The id of the store this state follows (its store record), None before records.
    store_id: str | None = None
    # Stores this state followed before: an old record put back is refused, not followed.
    former_stores: list[str] = field(default_factory=list)
    # The highest genuine log entry seen (a position, distsync.logorder): listing starts after
    # it, or on a store without atomic create at a look-back window below it.
    last_seq: int = 0
    marker_tag: str | None = None
    installed: dict[str, Installed] = field(default_factory=dict)
    # Versions whose install failed for a passing reason (store or disk): retried each cycle.
    retry: dict[str, int] = field(default_factory=dict)
    # The newest genuine version the log holds for each name, so that a name held back (by a
    # pin since removed, or a deleted file) returns to it without listing the log again.
    newest: dict[str, int] = field(default_factory=dict)
    # Versions that failed verification, by position: retried with backoff.
    rejected: dict[int, Rejection] = field(default_factory=dict)
    # Tagged log layout: the genuine entries read within the look-back window, so that
    # listing it again reads only what is new there (logorder.SeenWindow).
    seen: list[int] = field(default_factory=list)
    # The newest version of each name that is not for this server (distsync.rollout:
    # ``--to`` names none of its groups, or ``Names`` leaves the name out): "not targeted".
    skipped: dict[str, int] = field(default_factory=dict)
    # [[Release]] versions waiting for their wave (distsync.rollout): seq -> name.
    held_releases: dict[int, str] = field(default_factory=dict)

    def note_found(self, versions: Iterable[Version]) -> None:
        for version in versions:
            name = version.manifest.name
            self.newest[name] = max(self.newest.get(name, 0), version.seq)

    def due(self, seq: int, now: float, cap: float = RETRY_CAP) -> bool:
        """Whether ``seq`` may be tried (again) now. A next try further away than the cap
        can only come from a clock that went back: it is due."""
        rejection = self.rejected.get(seq)
        return rejection is None or not 0 < rejection.next_try - now <= cap

    def reject(self, seq: int, name: str | None, now: float, base: float) -> Rejection:
        """Record one more failed verification of ``seq``; returns the new record."""
        attempts = self.rejected[seq].attempts + 1 if seq in self.rejected else 1
        rejection = Rejection(attempts, now + retry_delay(attempts, base), name)
        self.rejected[seq] = rejection
        return rejection

    def due_rejections(self, now: float, limit: int) -> list[int]:
        """Rejected log entries whose next try is due, oldest first, at most ``limit``."""
        due = [seq for seq, r in self.rejected.items() if r.name is None and self.due(seq, now)]
        return sorted(due)[:limit]

    def behind(self, pins: Mapping[str, str], now: float) -> dict[str, int]:
        """Names whose installed version is not the one they should have: name -> seq.

        That is the pinned version for a pinned name, else the newest one in the log if it is
        newer than what is installed. A version rejected is wanted again once its retry is due.
        """
        targets = dict(self.newest)
        targets.update({name: pin_position(pin) for name, pin in pins.items()})
        wanted: dict[str, int] = {}
        for name, target in targets.items():
            current = self.installed.get(name)
            if not self.due(target, now) or (current is not None and current.version == target):
                continue
            if name in pins or current is None or current.version < target:
                wanted[name] = target
        return wanted

    def forget_superseded_rejections(self, pins: Mapping[str, str]) -> None:
        """A version whose content failed is retried only while it is its name's target."""
        for seq, rejection in list(self.rejected.items()):
            name = rejection.name
            if name is None:
                continue
            target = pin_position(pins[name]) if name in pins else self.newest.get(name)
            if seq != target:
                del self.rejected[seq]

    def resets_for(self, store_id: str) -> bool:
        """Whether following ``store_id`` would start this state afresh: a store other than
        the one followed, when there is anything to lose (a first run has nothing)."""
        if store_id == self.store_id:
            return False
        return not (self.store_id is None and self.last_seq == 0 and not self.installed)

    def follow_store(self, store_id: str) -> bool:
        """Bind this state to the store ``store_id``; True when it was a different store.

        A different store has its own log, starting at 1: what this state knew of the old
        log (cursor, versions, rejections) means nothing there. What is installed stays
        installed, with no version, so the new store's versions count as newer and content
        already in place is recognized by its SHA-256 instead of being fetched again.
        """
        if store_id == self.store_id:
            return False
        if store_id in self.former_stores:
            raise IntegrityError(
                f"the store record names store {store_id}, which this daemon followed before "
                "and left for another: an old store record was put back; not following it"
            )
        if not self.resets_for(store_id):
            self.store_id = store_id  # a first run: nothing to start afresh
            return False
        if self.store_id is not None:
            self.former_stores.append(self.store_id)
        self.store_id = store_id
        self.last_seq = 0
        self.marker_tag = None
        self.retry.clear()
        self.newest.clear()
        self.rejected.clear()
        self.seen.clear()
        self.skipped.clear()
        self.held_releases.clear()
        self.installed = {
            name: Installed(0, item.sha256, item.size) for name, item in self.installed.items()
        }
        return True


def pin_position(pin: str) -> int:
    """The log position a Pin's version id names (config.py checked it)."""
    pos = parse_version_id(pin)
    if pos is None:
        raise ValueError(f"{pin!r} is not a version id")
    return pos


def plan_installs(
    state: DaemonState, found: Iterable[Version], pins: Mapping[str, str], now: float
) -> list[Version]:
    """Which versions to install, one per name, oldest log entry first.

    A name gets its newest version by sequence number, and only if that is newer than what is
    installed (rollback protection: a replayed or late older upload never replaces a newer
    install). A pinned name gets exactly its pinned version, older or not. A version rejected
    whose next try is not due yet is passed over: an older genuine one found (a deleted
    file's) takes its place.
    """
    best: dict[str, Version] = {}
    for version in found:
        if not state.due(version.seq, now):
            continue
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


def _location_file_name(kind: str, bucket: str, prefix: str) -> str:
    ident = hashlib.sha256(f"{kind}\0{bucket}\0{prefix}".encode()).hexdigest()[:16]
    return f"state-{ident}.json"


def state_file_name(state_key: str, bucket: str, prefix: str) -> str:
    """The state file of one store location in a StateDir.

    ``state_key`` is the storage plugin's (``StorageBackend.state_key``); the transfer is not
    part of it, so S3 and S3+BitTorrent read the same bucket the same way and share one state:
    switching between them installs nothing again. The file holds the store's id: a store
    re-created at the same location is told apart by it (``follow_store``). Keying the file by
    location rather than by that id means a record that goes missing, or an old one put back,
    can never bring an older state back into use (a rollback).
    """
    return _location_file_name(state_key, bucket, prefix)


def legacy_state_file_names(state_key: str, bucket: str, prefix: str) -> list[str]:
    """Where distsync 0.1 kept the same state: it keyed S3+BitTorrent apart from S3 (the
    only state key it split)."""
    legacy = {"S3": "S3+BitTorrent"}.get(state_key)
    return [_location_file_name(legacy, bucket, prefix)] if legacy else []


class StateFile:
    """The daemon's state as JSON in its state directory.

    ``legacy`` names files an older version kept the same state in: the first load adopts
    the first one that exists.
    """

    def __init__(self, path: Path, legacy: Sequence[Path] = ()) -> None:
        self.path = path
        self.legacy = tuple(legacy)

    def load(self) -> DaemonState:
        if not self.path.exists():
            for old in self.legacy:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(old, self.path)
                    break
        try:
            raw = json.loads(self.path.read_text())
            return DaemonState(
                store_id=raw.get("store_id"),
                former_stores=[str(item) for item in raw.get("former_stores", [])],
                last_seq=int(raw["last_seq"]),
                marker_tag=raw.get("marker_tag"),
                installed={name: Installed(**item) for name, item in raw["installed"].items()},
                retry={name: int(seq) for name, seq in raw.get("retry", {}).items()},
                newest={name: int(seq) for name, seq in raw.get("newest", {}).items()},
                rejected=_load_rejected(raw.get("rejected", {})),
                seen=[int(pos) for pos in raw.get("seen", [])],
                skipped={name: int(seq) for name, seq in raw.get("skipped", {}).items()},
                held_releases={
                    int(seq): str(name) for seq, name in raw.get("held_releases", {}).items()
                },
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


def _load_rejected(raw: object) -> dict[int, Rejection]:
    if isinstance(raw, list):
        # Before retries, rejections were final: try each of them again now.
        return {int(seq): Rejection(0, 0.0) for seq in raw}
    if not isinstance(raw, dict):
        raise TypeError("rejected is not a table")
    return {int(seq): Rejection(**item) for seq, item in raw.items()}
