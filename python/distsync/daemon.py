"""``distsync daemon``: notice new artifacts, fetch, verify, place atomically, run the hook.

One cycle: a cheap conditional check of the marker; if it changed (or a retry, pin or missing
file needs it), list the log after the last sequence number seen, verify the new manifests,
let ``plan_installs`` decide, and install. State is saved after every install, so a restart
never downloads twice and never goes back to an older version.

Threads: the main thread handles signals, feeds systemd's watchdog and owns the rest. Each
cycle runs on an owned worker thread, which is cancelled (the stop event) and joined before
the swarm is closed and the state lock released; every store call goes through an
``InterruptibleStore``, so that join takes well under a second even while the store hangs.
The watchdog is fed only while the work moves (``Heartbeat``), not merely while the worker
is alive. With ``Storage = "S3+BitTorrent"`` the swarm lives as long as ``run`` and may wake
the main thread early when a peer has news.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import cast

from distsync import sdnotify
from distsync.catalog import Catalog, Rejected
from distsync.config import Config
from distsync.errors import DistsyncError, IntegrityError, LocalIOError, NotFoundError
from distsync.fsutil import local_io_error
from distsync.heartbeat import Heartbeat
from distsync.hooks import run_hook
from distsync.layout import Layout
from distsync.manifest import Version
from distsync.release.manager import Releases
from distsync.release.state import ActivationOutcome
from distsync.state import DaemonState, Installed, StateFile, plan_installs
from distsync.storage.base import Presigner, Store
from distsync.swarm.session import Swarm, open_swarm
from distsync.swarm.settings import TorrentSettings
from distsync.threads import InterruptibleStore, OwnedThread
from distsync.transfer.fetch import Interrupted, fetch_version

__all__ = ["CycleReport", "Daemon"]

log = logging.getLogger("distsync.daemon")

# Even when the marker says nothing changed, list the log every so many polls: an uploader
# that died between claiming its log entry and rewriting the marker is then still noticed.
_FULL_LIST_EVERY = 20
# How long a stop request waits for the cycle to end. Every wait in it gives way to a stop
# within a fraction of a second; this bound is only for a bug, which is then logged.
_STOP_GRACE = 5.0
# Store calls made after a stop request (withdrawing the peer record) get this long.
_FAREWELL = 2.0
# The main thread's longest wait. A signal may be delivered to any thread; its Python handler
# runs only once the main thread wakes, so this bounds how late a stop request is seen.
_WAKE_EVERY = 0.1


@dataclass
class CycleReport:
    installed: list[Version] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # How each release activation of the cycle ended (healthy, or failed and why).
    activations: list[ActivationOutcome] = field(default_factory=list)


class Daemon:
    def __init__(self, cfg: Config, store: Store, *, stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self._wake = threading.Event()  # poll now: a stop request, or a peer has news
        self._farewell_until = 0.0
        self.heartbeat = Heartbeat(time.monotonic())
        # Presigning is local (no request), so the swarm's web seed uses the store directly.
        self._presigner = cast(Presigner, store) if hasattr(store, "presign") else None
        self.store = InterruptibleStore(store, self._store_calls_end, on_answer=self._moved)
        self.output_dir = cfg.require_output_dir()
        self.catalog = Catalog(self.store, Layout(cfg.prefix), cfg.secret)
        ident = hashlib.sha256(f"{cfg.storage}\0{cfg.storage_bucket}\0{cfg.prefix}".encode())
        self.state_file = StateFile(cfg.daemon_state_dir() / f"state-{ident.hexdigest()[:16]}.json")
        self._polls = 0
        self._abandoned = False  # a worker outlived the stop grace: keep what it may use
        self.swarm: Swarm | None = None  # Storage = "S3+BitTorrent", while run() runs
        # [[Release]] names take the release path; the rest go to OutputDir.
        self.releases = Releases(
            cfg.releases,
            cfg.pins,
            hook_timeout=cfg.hook_timeout,
            stop=self.stop,
            expect_silence=self._expect_silence,
        )
        self.pins = self.releases.plain_pins()

    def _store_calls_end(self) -> bool:
        """Whether store calls in flight give up now: on a stop request, after the farewell."""
        return self.stop.is_set() and time.monotonic() >= self._farewell_until

    def _moved(self, _size: int = 0) -> None:
        """The work moved forward (the store answered, a batch was written)."""
        self.heartbeat.beat(time.monotonic())

    def _expect_silence(self, seconds: float) -> None:
        """A hook runs next: silent but bounded (its timeout, then a few seconds to end it)."""
        self.heartbeat.expect(time.monotonic(), seconds + 10)

    # -- one cycle ----------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        report = CycleReport()
        if self.swarm is not None:
            self.swarm.maintain()  # peer record, seeding windows
        self._releases_local(report)
        state = self.state_file.load()
        try:
            tag = self.store.changed(self.catalog.layout.marker, state.marker_tag)
        except DistsyncError as exc:
            log.warning("cannot check for new artifacts: %s", exc)
            report.failed.append(str(exc))
            return report
        lost = self._forget_missing_files(state)
        full_list = self._polls % _FULL_LIST_EVERY == 0
        self._polls += 1
        wanted = state.retry or state.behind(self.pins) or self.releases.needs_store()
        if tag is None and not (full_list or lost or wanted):
            return report
        listed_from = state.last_seq
        try:
            found, last_seq = self._collect(state, lost)
        except DistsyncError as exc:
            log.warning("cannot list new artifacts: %s", exc)
            report.failed.append(str(exc))
            return report
        plain = [v for v in found if not self.releases.claims(v.manifest.name)]
        for version in plan_installs(state, plain, self.pins):
            if self.stop.is_set():
                break
            self._install(state, version, report)
            self.state_file.save(state)
        self._releases_from_store(found, report, whole_log=listed_from == 0)
        state.last_seq = max(state.last_seq, last_seq)
        if tag is not None:
            state.marker_tag = tag
        self.state_file.save(state)
        return report

    def _forget_missing_files(self, state: DaemonState) -> dict[str, int]:
        """Names recorded as installed whose file has gone: name -> the version it had.

        They are installed again: the newest version if it is genuine, else that one.
        """
        lost: dict[str, int] = {}
        for name in [name for name in state.installed if not (self.output_dir / name).is_file()]:
            log.warning("%s was removed from %s; installing it again", name, self.output_dir)
            lost[name] = state.installed.pop(name).version
        return lost

    def _collect(self, state: DaemonState, lost: dict[str, int]) -> tuple[list[Version], int]:
        """New log entries, plus the versions that retries, pins and held-back names need."""
        found: list[Version] = []
        last_seq = state.last_seq
        for entry in self.catalog.entries_after(state.last_seq):
            last_seq = max(last_seq, entry.seq)
            if isinstance(entry, Rejected):
                log.warning("ignoring log entry %d: %s", entry.seq, entry.reason)
            else:
                found.append(entry)
        state.note_found(v for v in found if not self.releases.claims(v.manifest.name))
        extra = set(state.retry.values()) | set(state.behind(self.pins).values())
        extra |= set(lost.values())
        for seq in sorted(extra - {v.seq for v in found}):
            try:
                found.append(self.catalog.read(seq))
            except NotFoundError:
                log.warning("version %d is no longer in the store", seq)
                state.rejected.append(seq)
            except IntegrityError as exc:
                log.warning("ignoring log entry %d: %s", seq, exc)
                state.rejected.append(seq)
        return found, last_seq

    def _install(self, state: DaemonState, version: Version, report: CycleReport) -> None:
        manifest = version.manifest
        dest = self.output_dir / manifest.name
        try:
            fetch = self.swarm.fetch if self.swarm is not None else fetch_version
            result = fetch(
                self.store, self.cfg.secret, version, dest,
                progress=self._moved, should_stop=self.stop.is_set,
            )  # fmt: skip
        except Interrupted:
            log.info("stopped while installing %s version %s", manifest.name, version.version_id)
            state.retry[manifest.name] = version.seq
            return
        except IntegrityError as exc:
            log.error("rejected %s version %s: %s", manifest.name, version.version_id, exc)
            state.retry.pop(manifest.name, None)
            state.rejected.append(version.seq)
            report.failed.append(str(exc))
            return
        except (DistsyncError, OSError) as exc:
            # An OSError here is a local file problem the transfer did not name itself.
            log.error(
                "could not install %s version %s (will retry): %s",
                manifest.name,
                version.version_id,
                exc,
            )
            state.retry[manifest.name] = version.seq
            report.failed.append(str(exc))
            return
        state.installed[manifest.name] = Installed(version.seq, manifest.sha256, manifest.size)
        state.retry.pop(manifest.name, None)
        report.installed.append(version)
        log.info(
            "installed %s version %s sha256 %s %d bytes in %.2f s",
            manifest.name,
            version.version_id,
            manifest.sha256,
            result.size,
            result.seconds,
        )
        if self.cfg.on_update:
            self._expect_silence(self.cfg.hook_timeout)
            run_hook(
                self.cfg.on_update, dest, version, self.cfg.hook_timeout,
                should_stop=self.stop.is_set,
            )  # fmt: skip

    # -- releases ([[Release]], distsync.release) ------------------------------------------

    def _releases_local(self, report: CycleReport) -> None:
        """Operator requests, crash recovery, switches to kept releases: no store needed."""
        self.releases.local_pass()
        self._report_activations(report)

    def _releases_from_store(
        self, found: list[Version], report: CycleReport, *, whole_log: bool
    ) -> None:
        self.releases.note_found(found)
        fetch = self.swarm.fetch if self.swarm is not None else fetch_version

        def place(version: Version, dest: Path) -> object:
            return fetch(
                self.store, self.cfg.secret, version, dest,
                progress=self._moved, should_stop=self.stop.is_set,
            )  # fmt: skip

        self.releases.store_pass(
            self.catalog.versions, self.catalog.read, place, whole_log=whole_log
        )
        self._report_activations(report)

    def _report_activations(self, report: CycleReport) -> None:
        for outcome in self.releases.drain_outcomes():
            report.activations.append(outcome)
            if not outcome.healthy:
                report.failed.append(f"{outcome.name} version {outcome.version}: {outcome.reason}")

    # -- the loop -----------------------------------------------------------------------

    def run(self, *, once: bool = False) -> int:
        """Poll until stopped (or one cycle with ``once``); returns the exit status."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise local_io_error("create", self.output_dir, exc) from None
        with (
            self._exclusive(),
            self.releases.managed(),
            _stop_on_signals(self.stop, self._wake),
            self._swarm(),
        ):
            log.info("watching %s for %s", self.store.description, self.output_dir)
            watchdog = sdnotify.watchdog_interval()
            if watchdog:
                # Fed while the work moved within one watchdog period (twice the interval):
                # systemd restarts a daemon whose work stands still for about two.
                self.heartbeat.allowance = 2 * watchdog
            # Ready once running: a first cycle may be a long download, which systemd should
            # not take for a failed start; the watchdog is fed all through it.
            sdnotify.notify("READY=1")
            while not self.stop.is_set():
                report = self._cycle_until_stopped(watchdog)
                if report is None:
                    break
                if once:
                    return 1 if report.failed else 0
                self._rest(watchdog)
            sdnotify.notify("STOPPING=1")
        log.info("stopped")
        return 0

    def _rest(self, watchdog: float | None) -> None:
        """Wait PollInterval plus jitter, or less if a stop request or a peer's news comes."""
        delay = self.cfg.poll_interval + random.uniform(0, self.cfg.poll_jitter)
        deadline = time.monotonic() + delay
        fed = -math.inf
        while not self.stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if watchdog and time.monotonic() - fed >= watchdog:
                sdnotify.notify("WATCHDOG=1")  # resting is the daemon working as it should
                fed = time.monotonic()
            if self._wake.wait(min(remaining, _WAKE_EVERY)):
                self._wake.clear()
                break

    def _cycle_until_stopped(self, watchdog: float | None) -> CycleReport | None:
        """One cycle on an owned worker thread, so that the main thread can honour a stop
        request and feed the watchdog meanwhile. None when stopped."""
        self._moved()
        worker: OwnedThread[CycleReport] = OwnedThread(
            "distsync-cycle", lambda _cancelled: self.cycle()
        ).start()
        warned, fed = False, -math.inf
        while not worker.join(_WAKE_EVERY) and not self.stop.is_set():
            now = time.monotonic()
            if self.heartbeat.fresh(now):
                if watchdog and now - fed >= watchdog:
                    sdnotify.notify("WATCHDOG=1")
                    fed = now
                warned = False
            elif not warned:
                warned = True
                log.warning(
                    "no progress for %.0f s; no longer feeding the watchdog",
                    self.heartbeat.silent_for(now),
                )
        if not worker.join(_STOP_GRACE):
            # A bug: every wait in a cycle gives way to a stop. The worker may still use the
            # swarm and the state file, so both stay as they are until the process exits.
            log.error("the cycle did not stop within %g s of the stop request", _STOP_GRACE)
            self._abandoned = True
            return None
        try:
            report = worker.result()
        except Interrupted:
            if self.stop.is_set():
                return None
            raise
        return None if self.stop.is_set() else report

    @contextlib.contextmanager
    def _swarm(self) -> Iterator[None]:
        """One BitTorrent session for the daemon's lifetime (None without libtorrent)."""
        cfg = self.cfg
        if cfg.storage != "S3+BitTorrent":
            yield
            return
        self.swarm = open_swarm(
            TorrentSettings.from_config(cfg),
            self.store,
            cfg.secret,
            cfg.prefix,
            cfg.daemon_state_dir() / "torrent",
            endpoint=cfg.aws.endpoint,
            presigner=self._presigner,
            on_news=self._wake.set,
        )
        try:
            yield
        finally:
            if self.swarm is not None and not self._abandoned:
                self._farewell_until = time.monotonic() + _FAREWELL
                self.swarm.close()
            self.swarm = None

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One daemon per state file: a second one would race the first on every install."""
        lock_path = self.state_file.path.with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = open(lock_path, "a")  # noqa: SIM115 - held for the daemon's lifetime
        except OSError as exc:
            raise local_io_error("create", lock_path, exc) from None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LocalIOError(
                    f"another distsync daemon already uses {self.state_file.path.parent}"
                ) from None
            yield
        finally:
            if not self._abandoned:  # else the lock is held until the process exits
                handle.close()


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, wake: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()
        wake.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
