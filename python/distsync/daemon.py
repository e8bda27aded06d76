"""``distsync daemon``: notice new artifacts, fetch, verify, place atomically, run the hook.

One cycle: a cheap conditional check of the marker; if it changed (or a retry, pin or missing
file needs it), list the log after the last sequence number seen, verify the new manifests,
let ``plan_installs`` decide, and install. State is saved after every install, so a restart
never downloads twice and never goes back to an older version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

from distsync import sdnotify
from distsync.catalog import Catalog, Rejected
from distsync.config import Config
from distsync.errors import DistsyncError, IntegrityError, LocalIOError, NotFoundError
from distsync.fsutil import local_io_error, remove_stale_temps
from distsync.hooks import run_hook
from distsync.layout import Layout
from distsync.manifest import Version
from distsync.state import DaemonState, Installed, StateFile, plan_installs
from distsync.status.reporter import Observer, start_reporting
from distsync.storage.base import Store
from distsync.storage.counting import CountingStore
from distsync.transfer.fetch import Interrupted, fetch_version
from distsync.transfer.torrent import Swarm, TorrentSettings, open_swarm

__all__ = ["CycleReport", "Daemon"]

log = logging.getLogger("distsync.daemon")

# Even when the marker says nothing changed, list the log every so many polls: an uploader
# that died between claiming its log entry and rewriting the marker is then still noticed.
_FULL_LIST_EVERY = 20
# How long a stop request waits for a cycle blocked on the store before abandoning it.
_STOP_GRACE = 5.0


@dataclass
class CycleReport:
    installed: list[Version] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Daemon:
    def __init__(self, cfg: Config, store: Store, *, stop: threading.Event | None = None) -> None:
        store = CountingStore(store)  # requests and bytes read, for status and metrics
        self.cfg = cfg
        self.store = store
        self.output_dir = cfg.require_output_dir()
        self.catalog = Catalog(store, Layout(cfg.prefix), cfg.secret)
        self.stop = stop or threading.Event()
        ident = hashlib.sha256(f"{cfg.storage}\0{cfg.storage_bucket}\0{cfg.prefix}".encode())
        self.state_file = StateFile(cfg.daemon_state_dir() / f"state-{ident.hexdigest()[:16]}.json")
        self._polls = 0
        self.swarm: Swarm | None = None  # Storage = "S3+BitTorrent", while run() runs
        self.fleet = Observer()  # status record and metrics, while run() runs

    # -- one cycle ----------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        report = CycleReport()
        if self.swarm is not None:
            self.swarm.maintain()  # peer record, seeding windows
        state = self.state_file.load()
        try:
            tag = self.store.changed(self.catalog.layout.marker, state.marker_tag)
        except DistsyncError as exc:
            log.warning("cannot check for new artifacts: %s", exc)
            report.failed.append(str(exc))
            self.fleet.poll_failed(str(exc))
            return report
        lost = self._forget_missing_files(state)
        full_list = self._polls % _FULL_LIST_EVERY == 0
        self._polls += 1
        if tag is None and not (full_list or lost or state.retry or state.behind(self.cfg.pins)):
            return report
        try:
            found, last_seq = self._collect(state, lost)
        except DistsyncError as exc:
            log.warning("cannot list new artifacts: %s", exc)
            report.failed.append(str(exc))
            self.fleet.poll_failed(str(exc))
            return report
        for version in plan_installs(state, found, self.cfg.pins):
            if self.stop.is_set():
                break
            self._install(state, version, report)
            self.state_file.save(state)
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
        state.note_found(found)
        extra = set(state.retry.values()) | set(state.behind(self.cfg.pins).values())
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
        self.fleet.installing(version)
        try:
            fetch = self.swarm.fetch if self.swarm is not None else fetch_version
            result = fetch(self.store, self.cfg.secret, version, dest, should_stop=self.stop.is_set)
        except Interrupted:
            log.info("stopped while installing %s version %s", manifest.name, version.version_id)
            state.retry[manifest.name] = version.seq
            return
        except IntegrityError as exc:
            log.error("rejected %s version %s: %s", manifest.name, version.version_id, exc)
            state.retry.pop(manifest.name, None)
            state.rejected.append(version.seq)
            report.failed.append(str(exc))
            self.fleet.failed(version, str(exc), final=True)
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
            self.fleet.failed(version, str(exc), final=False)
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
        healthy = None
        if self.cfg.on_update:
            healthy = run_hook(self.cfg.on_update, dest, version, self.cfg.hook_timeout)
        self.fleet.installed(version, hook=healthy, swarm=self.swarm is not None)

    # -- the loop -----------------------------------------------------------------------

    def run(self, *, once: bool = False) -> int:
        """Poll until stopped (or one cycle with ``once``); returns the exit status."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise local_io_error("create", self.output_dir, exc) from None
        with self._exclusive(), _stop_on_signals(self.stop), self._swarm(), self._reporting(once):
            for stale in remove_stale_temps(self.output_dir):
                log.info("removed %s left by an interrupted install", stale.name)
            log.info("watching %s for %s", self.store.description, self.output_dir)
            watchdog = sdnotify.watchdog_interval()
            # Ready once running: a first cycle may be a long download, which systemd should
            # not take for a failed start; the watchdog is fed all through it.
            sdnotify.notify("READY=1")
            while not self.stop.is_set():
                began = time.monotonic()
                report = self._cycle_until_stopped(watchdog)
                if report is None:
                    break
                self.fleet.cycle_done(time.monotonic() - began)
                if once:
                    return 1 if report.failed else 0
                delay = self.cfg.poll_interval + random.uniform(0, self.cfg.poll_jitter)
                deadline = time.monotonic() + delay
                while not self.stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
                    if watchdog:
                        sdnotify.notify("WATCHDOG=1")
                    self.stop.wait(min(remaining, watchdog or remaining))
            sdnotify.notify("STOPPING=1")
            log.info("stopped")
        return 0

    def _cycle_until_stopped(self, watchdog: float | None) -> CycleReport | None:
        """Run one cycle in a worker thread so that a stop request is honoured within
        ``_STOP_GRACE`` seconds even while the store hangs (boto3's retries and backoff
        sleeps cannot be interrupted). None when the cycle was abandoned."""
        outcome: list[CycleReport | BaseException] = []

        def work() -> None:
            try:
                outcome.append(self.cycle())
            except BaseException as exc:  # handed to the main thread below
                outcome.append(exc)

        worker = threading.Thread(target=work, name="distsync-cycle", daemon=True)
        worker.start()
        while worker.is_alive() and not self.stop.is_set():
            if watchdog:
                sdnotify.notify("WATCHDOG=1")
            worker.join(min(watchdog or 1.0, 1.0))
        worker.join(_STOP_GRACE)
        if worker.is_alive():
            log.warning("the store did not answer within %g s of the stop request", _STOP_GRACE)
            for stale in remove_stale_temps(self.output_dir):
                log.info("removed %s", stale.name)
            return None
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    @contextlib.contextmanager
    def _swarm(self) -> Iterator[None]:
        """One BitTorrent session for the daemon's lifetime (None without libtorrent)."""
        if self.cfg.storage != "S3+BitTorrent":
            yield
            return
        cfg = self.cfg
        settings = TorrentSettings(
            port=cfg.torrent_port,
            address=cfg.torrent_address,
            seed_seconds=cfg.torrent_seed_seconds,
            s3_readers=cfg.torrent_s3_readers,
            web_seed_delay=cfg.torrent_web_seed_delay,
            stall_seconds=cfg.torrent_stall_seconds,
            tracker_url=cfg.tracker_url,
        )
        work_dir = cfg.daemon_state_dir() / "torrent"
        self.swarm = open_swarm(
            settings, self.store, cfg.secret, cfg.prefix, work_dir, endpoint=cfg.aws.endpoint
        )
        try:
            yield
        finally:
            if self.swarm is not None:
                self.swarm.close()
            self.swarm = None

    @contextlib.contextmanager
    def _reporting(self, once: bool) -> Iterator[None]:
        """This server's status record and metrics for the daemon's lifetime (status.reporter).

        On the way out the last record says the server stopped, unless this was one
        ``--once`` cycle: a server run from a timer is not gone between its runs."""
        self.fleet = start_reporting(self.cfg, self.store, self.state_file.load, self.output_dir)
        try:
            yield
        finally:
            self.fleet.close(stopped=not once or self.stop.is_set())
            self.fleet = Observer()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One daemon per state file: a second one would race the first on every install."""
        lock_path = self.state_file.path.with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = open(lock_path, "a")  # noqa: SIM115 - held for the daemon's lifetime
        except OSError as exc:
            raise local_io_error("create", lock_path, exc) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LocalIOError(
                    f"another distsync daemon already uses {self.state_file.path.parent}"
                ) from None
            yield


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
