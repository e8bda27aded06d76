"""The daemon's side: observe what each cycle did, keep the status record and metrics true.

The daemon calls ``Observer`` methods where things happen (an install starts, succeeds or
fails, a poll fails, a cycle ends); they only record and never block on the store. A thread
of the reporter's own rewrites the record at once after a cycle that changed something
(``ServerStatus.stable`` differs), and otherwise every ``StatusInterval`` seconds as a
heartbeat, so an idle server costs one PUT per interval and nothing more. A store that hangs
delays only that thread; stopping gives its last write at most ``_CLOSE_GRACE`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distsync import __version__
from distsync.config import Config
from distsync.errors import DistsyncError
from distsync.logorder import parse_version_id, version_id
from distsync.manifest import Version
from distsync.metrics import DaemonMetrics
from distsync.node import node_id_of
from distsync.release.state import ActivationOutcome
from distsync.state import DaemonState
from distsync.status.board import StatusBoard, Throttle
from distsync.status.record import (
    LIVE_INTERVALS,
    MAX_REASON,
    ArtifactStatus,
    Failure,
    ServerStatus,
)
from distsync.storage.counting import CountingStore

__all__ = ["FleetReporter", "Identity", "Observer", "start_reporting"]

log = logging.getLogger(__name__)

_CLOSE_GRACE = 1.0  # seconds a stopping daemon gives its last status record, all told
_HUNG = 0.5  # a status write under way this long at stop: the store hangs, do not wait on it
_RETRY_AFTER = 30.0  # seconds before a failed status write is tried again


@dataclass(frozen=True)
class Identity:
    node: str
    name: str
    groups: tuple[str, ...] = ()


class Observer:
    """What the daemon reports; this base does nothing (a daemon object used without
    ``run()``, e.g. in tests of a single cycle)."""

    def installing(self, version: Version) -> None:
        pass

    def installed(self, version: Version, *, hook: bool | None, swarm: bool) -> None:
        pass

    def failed(self, version: Version, reason: str, *, final: bool) -> None:
        pass

    def activated(self, outcome: ActivationOutcome) -> None:
        pass

    def poll_failed(self, reason: str) -> None:
        pass

    def cycle_done(self, seconds: float) -> None:
        pass

    def close(self, *, stopped: bool) -> None:
        pass


class FleetReporter(Observer):
    def __init__(
        self,
        board: StatusBoard,
        identity: Identity,
        store: CountingStore,
        load_state: Callable[[], DaemonState],
        output_dir: Path,
        *,
        interval: float,
        pins: dict[str, str],
        metrics: DaemonMetrics | None = None,
        textfile: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.board = board
        self.identity = identity
        self.interval = interval
        self.pins = dict(pins)
        self.metrics = metrics
        self.textfile = textfile
        self._store = store
        self._load_state = load_state
        self._output_dir = output_dir
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._failures: dict[str, Failure] = {}
        self._hooks: dict[str, tuple[int, str]] = {}  # name -> (version, "ok" | "failed")
        self._installed_at: dict[str, tuple[int, float]] = {}
        # [[Release]] names, which the daemon's state file does not hold: what `current`
        # points at after each activation (version, sha256 when known, when).
        self._released: dict[str, tuple[int, str | None, float | None]] = {}
        self._peer_bytes = 0
        self._install_mark = 0
        self._last_poll: float | None = None
        self._poll_failed = False
        self._published: ServerStatus | None = None
        self._next_write = 0.0  # when a heartbeat (or a retry) is due, by self._clock
        self._failing = False
        self._publishing_since: float | None = None  # time.monotonic() of a write under way
        self._throttle = Throttle()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distsync-status", daemon=True)

    def start(self) -> FleetReporter:
        if self.metrics is not None:
            with contextlib.suppress(DistsyncError):
                for name, item in self._load_state().installed.items():
                    self.metrics.installed.labels(name).info(
                        {"version": version_id(item.version), "sha256": item.sha256}
                    )
        self._thread.start()
        return self

    # -- observations (the daemon's cycle thread) ---------------------------------------------

    def installing(self, version: Version) -> None:
        self._install_mark = self._store.bytes_read

    def installed(self, version: Version, *, hook: bool | None, swarm: bool) -> None:
        name, now = version.manifest.name, self._clock()
        # What the swarm delivered beyond what this server read from the store itself came
        # from peers (a web seed's bytes, fetched by libtorrent directly, land here too).
        from_store = self._store.bytes_read - self._install_mark
        peers = max(version.manifest.object_size - from_store, 0) if swarm else 0
        with self._lock:
            self._installed_at[name] = (version.seq, now)
            if hook is not None:
                self._hooks[name] = (version.seq, "ok" if hook else "failed")
            else:
                self._hooks.pop(name, None)
            self._peer_bytes += peers
        if self.metrics is not None:
            m = self.metrics
            m.installs.labels(name).inc()
            m.last_install.labels(name).set(now)
            m.installed.labels(name).info(
                {"version": version.version_id, "sha256": version.manifest.sha256}
            )
            m.fetched.labels("peers").inc(peers)
            if hook is False:
                m.hook_failures.labels(name).inc()

    def failed(self, version: Version, reason: str, *, final: bool) -> None:
        name = version.manifest.name
        one_line = " ".join(reason.split())[:MAX_REASON]
        with self._lock:
            self._failures[name] = Failure(version.seq, one_line, self._clock(), final)
        if self.metrics is not None:
            self.metrics.failures.labels(name).inc()

    def activated(self, outcome: ActivationOutcome) -> None:
        """A release was switched to (healthy) or back from (its checks failed)."""
        version, current = _seq(outcome.version), _seq(outcome.current)
        name = outcome.name
        with self._lock:
            if outcome.healthy and version is not None:
                self._released[name] = (version, outcome.sha256, outcome.at)
                self._hooks[name] = (version, "ok")
            elif version is not None:
                reason = " ".join((outcome.reason or "its checks failed").split())
                self._failures[name] = Failure(version, reason[:MAX_REASON], outcome.at, True)
                if current is not None and self._released.get(name, (None,))[0] != current:
                    self._released[name] = (current, None, None)
        if self.metrics is not None:
            counter = self.metrics.installs if outcome.healthy else self.metrics.failures
            counter.labels(name).inc()

    def poll_failed(self, reason: str) -> None:
        self._poll_failed = True
        if self.metrics is not None:
            self.metrics.poll_errors.inc()

    def cycle_done(self, seconds: float) -> None:
        now = self._clock()
        if not self._poll_failed:
            self._last_poll = now
        self._poll_failed = False
        if self.metrics is not None:
            self.metrics.poll_seconds.observe(seconds)
            if self._last_poll == now:
                self.metrics.last_poll.set(now)
        self._wake.set()

    # -- the record ---------------------------------------------------------------------------

    def snapshot(self, now: float, *, stopped: bool = False) -> ServerStatus:
        state = self._load_state()
        with self._lock:
            failures = dict(self._failures)
            hooks = dict(self._hooks)
            installed_at = dict(self._installed_at)
            released = dict(self._released)
            peer_bytes = self._peer_bytes
        artifacts = {}
        names = {*state.installed, *state.newest, *failures, *self.pins, *released, *state.skipped}
        for name in sorted(names):
            have = state.installed.get(name)
            version = have.version if have is not None else None
            sha256 = have.sha256 if have is not None else None
            hook = hooks.get(name)
            when = installed_at.get(name)
            if name in released:
                version, sha256, at = released[name]
                when = None if at is None else (version, at)
            artifacts[name] = ArtifactStatus(
                version=version,
                sha256=sha256,
                installed_at=when[1]
                if when is not None and when[0] == version
                else self._file_time(name, have is not None),
                newest=state.newest.get(name),
                hook=hook[1] if hook is not None and hook[0] == version else None,
                failure=failures.get(name),
                skipped=state.skipped.get(name),
            )
        return ServerStatus(
            node=self.identity.node,
            name=self.identity.name,
            groups=self.identity.groups,
            daemon=__version__,
            written_at=now,
            expires=now if stopped else now + LIVE_INTERVALS * self.interval,
            interval=self.interval,
            started_at=self._started,
            stopped=stopped,
            last_poll=self._last_poll,
            bytes_store=self._store.bytes_read,
            bytes_peers=peer_bytes,
            pins=self.pins,
            artifacts=artifacts,
        )

    def _file_time(self, name: str, installed: bool) -> float | None:
        """An install made before this daemon started: the file's time is when it landed."""
        if not installed:
            return None
        try:
            return os.stat(self._output_dir / name).st_mtime
        except OSError:
            return None

    def write(self, *, stopped: bool = False, force: bool = False) -> bool:
        """Publish the record if something changed, a heartbeat is due, or ``force``;
        refresh the metrics textfile. Whether a record was written."""
        now = self._clock()
        try:
            status = self.snapshot(now, stopped=stopped)
        except DistsyncError as exc:
            self._warn("state", f"cannot read the daemon's state for its status record: {exc}")
            return False
        last = self._published
        changed = last is None or status.stable() != last.stable()
        # A change is written at once, unless the last write failed: then not before the
        # retry is due, so a store that is down gets no extra request per poll.
        due = force or now >= self._next_write or (changed and not self._failing)
        wrote = False
        if due:
            self._publishing_since = time.monotonic()
            try:
                self.board.publish(status)
            except DistsyncError as exc:
                self._warn("publish", f"cannot write this server's status record: {exc}")
                self._next_write = now + min(_RETRY_AFTER, self.interval)
                self._failing = True
                self._count_write("error")
            else:
                self._published = status
                self._next_write = now + self.interval
                self._failing = False
                self._count_write("ok")
                wrote = True
            finally:
                self._publishing_since = None
        self._write_textfile()
        return wrote

    def _count_write(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.status_writes.labels(result).inc()

    def _write_textfile(self) -> None:
        if self.metrics is None:
            return
        self.metrics.sync_store_bytes()
        if self.textfile is not None:
            try:
                self.metrics.write_textfile(self.textfile)
            except DistsyncError as exc:
                self._warn("textfile", f"cannot write MetricsTextfile: {exc}")

    def _warn(self, subject: str, message: str) -> None:
        if self._throttle.allow(subject):
            log.warning("%s", message)

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self.write()
            delay = max(self._next_write - self._clock(), 1.0)
            self._wake.wait(delay)
            self._wake.clear()

    def close(self, *, stopped: bool) -> None:
        """Stop the thread and write a last record (``stopped``: this server is going away,
        so waits and ``--all`` stop counting it at once)."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + _CLOSE_GRACE
        since = self._publishing_since
        if since is not None and time.monotonic() - since > _HUNG:
            # The store hangs (the daemon's cycle has just given up on it too): a last
            # write would hang as well; the record expires on its own.
            log.warning("the store did not take this server's last status record")
        else:
            if self._thread.ident is not None:  # it was started
                self._thread.join(_CLOSE_GRACE)
            last = threading.Thread(
                target=lambda: self.write(stopped=stopped, force=True),
                name="distsync-status-last",
                daemon=True,
            )
            if not self._thread.is_alive():
                last.start()
                last.join(max(deadline - time.monotonic(), 0.0))
            if self._thread.is_alive() or last.is_alive():
                log.warning("the store did not take this server's last status record in time")
        if self.metrics is not None:
            self.metrics.close()


def start_reporting(
    cfg: Config, store: CountingStore, load_state: Callable[[], DaemonState], output_dir: Path
) -> FleetReporter:
    """The reporter a daemon's configuration asks for, its thread and metrics started."""
    state_dir = cfg.daemon_state_dir()
    identity = Identity(node_id_of(state_dir), cfg.node_name, cfg.groups)
    metrics = None
    if cfg.metrics_address is not None or cfg.metrics_textfile is not None:
        metrics = DaemonMetrics(store)
        if cfg.metrics_address is not None:
            metrics.serve(cfg.metrics_address)
    board = StatusBoard(store, cfg.prefix, cfg.secret)
    reporter = FleetReporter(
        board,
        identity,
        store,
        load_state,
        output_dir,
        interval=cfg.status_interval,
        pins=dict(cfg.pins),
        metrics=metrics,
        textfile=cfg.metrics_textfile,
    )
    log.info("reporting status as %s (node %s)", identity.name, identity.node)
    return reporter.start()


def _seq(version: str | None) -> int | None:
    return None if version is None else parse_version_id(version)
