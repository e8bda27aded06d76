"""``distsync daemon``: notice new artifacts, fetch, verify, place atomically, run the hook.

One cycle: a cheap conditional check of the marker; if it changed (or a retry, pin or missing
file needs it), list the log after the last entry seen (on a store without atomic create,
from a look-back window below it: ``distsync.logorder``), verify the new manifests, let
``plan_installs`` decide, and install. State is saved after every install, so a restart
never downloads twice and never goes back to an older version.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import random
import signal
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import cast

from distsync import sdnotify
from distsync.catalog import Catalog, Rejected
from distsync.config import Config
from distsync.errors import (
    ContentGoneError,
    DistsyncError,
    IntegrityError,
    LocalIOError,
    NotFoundError,
    StorageError,
)
from distsync.fsutil import local_io_error
from distsync.heartbeat import Heartbeat
from distsync.hooks import run_hook
from distsync.layout import Layout
from distsync.logorder import SeenWindow, parse_version_id, version_id
from distsync.manifest import Manifest, Version
from distsync.release.manager import Releases
from distsync.release.state import ActivationOutcome
from distsync.rollout.gate import RolloutGate
from distsync.state import (
    DaemonState,
    Installed,
    StateFile,
    legacy_state_file_names,
    plan_installs,
    state_file_name,
)
from distsync.status.reporter import Observer, start_reporting
from distsync.storage import storage_backend
from distsync.storage.base import Presigner, Store
from distsync.storage.counting import CountingStore
from distsync.store_record import read_store_record, verify_store
from distsync.threads import InterruptibleStore, OwnedThread
from distsync.transfer.api import TransferSession, transfer_method
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
# Rejected log entries read again per cycle, at most: junk in the log costs bounded work.
_RETRIES_PER_CYCLE = 32


@dataclass
class CycleReport:
    installed: list[Version] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # How each release activation of the cycle ended (healthy, or failed and why).
    activations: list[ActivationOutcome] = field(default_factory=list)


class Daemon:
    def __init__(self, cfg: Config, store: Store, *, stop: threading.Event | None = None) -> None:
        self.counted = CountingStore(store)  # requests and bytes read: status and metrics
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self._wake = threading.Event()  # poll now: a stop request, or a peer has news
        self._farewell_until = 0.0
        self.heartbeat = Heartbeat(time.monotonic())
        backend = storage_backend(cfg)
        # Presigning is local (no request), so the swarm's web seed uses the store directly.
        presigns = backend.capabilities.presigned_urls
        self._presigner = cast(Presigner, store) if presigns else None
        # Swift's presign takes its TempURL from the store record (store_record.TempUrlGrant).
        self._use_temp_url = getattr(store, "use_temp_url", None)
        self.store = InterruptibleStore(self.counted, self._store_calls_end, on_answer=self._moved)
        self.output_dir = cfg.require_output_dir()
        cfg.refuse_signing_key()
        warning = cfg.unsigned_warning()
        if warning is not None:
            log.warning("%s", warning)
        # Every log entry is read through the config's trust (distsync.signed): with
        # TrustedSigners, an entry not signed by one of them is rejected like a tampered one.
        self.catalog = Catalog(self.store, Layout(cfg.prefix), cfg.secret, trust=cfg.trust)
        where = (backend.state_key, cfg.storage_bucket, cfg.prefix)
        state_dir = cfg.daemon_state_dir()
        self.state_file = StateFile(
            state_dir / state_file_name(*where),
            [state_dir / name for name in legacy_state_file_names(*where)],
        )
        self._polls = 0
        self._store_checked = False  # the store record was read (or found absent) once
        self._said: set[str] = set()  # lines about pins, logged once per process
        self._unsatisfiable_pins: set[str] = set()  # pins no version can satisfy
        self._abandoned = False  # a worker outlived the stop grace: keep what it may use
        # The transfer plugin's session (Storage = "S3+BitTorrent"), while run() runs.
        self.swarm: TransferSession | None = None
        self.fleet = Observer()  # status record and metrics, while run() runs
        # [[Release]] names take the release path; the rest go to OutputDir.
        self.releases = Releases(
            cfg.releases,
            cfg.pins,
            hook_timeout=cfg.hook_timeout,
            stop=self.stop,
            expect_silence=self._expect_silence,
        )
        self.pins = self.releases.plain_pins()
        # Targeting and staged rollouts (distsync.rollout): which versions are for this
        # server, and when one with waves may be installed.
        self.gate = RolloutGate(cfg, self.store)

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
        now = time.time()
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
        idle = not (
            full_list
            or lost
            or state.retry
            or any(not self.gate.resting(seq) for seq in state.behind(self._pins(), now).values())
            or state.due_rejections(now, 1)
            or self.releases.needs_store()
            or any(not self.gate.resting(seq) for seq in state.held_releases)
        )
        if tag is None and idle:
            return report
        listed_from = state.last_seq
        try:
            self._follow_store(state)
            found = self._collect(state, lost, now)
        except IntegrityError as exc:
            if not self._store_checked:
                raise  # a config whose secret is not the store's: exit 3 at once
            log.error("%s", exc)
            report.failed.append(str(exc))
            return report
        except DistsyncError as exc:
            log.warning("cannot list new artifacts: %s", exc)
            report.failed.append(str(exc))
            self.fleet.poll_failed(str(exc))
            return report
        plain = [
            v
            for v in found
            if not self.releases.claims(v.manifest.name) and self.gate.for_me(v.manifest)
        ]
        tried: set[int] = set()
        # A version rejected now is passed over by the next plan: another round installs what
        # takes its place (the older genuine version of a deleted file).
        while not self.stop.is_set():
            plan = [v for v in plan_installs(state, plain, self.pins, now) if v.seq not in tried]
            if not plan:
                break
            for version in plan:
                if self.stop.is_set():
                    break
                tried.add(version.seq)
                if not self.gate.admit(version, now):
                    # Its wave's turn has not come (or the rollout is halted): the next plan
                    # does without it (a deleted file gets the version it had back).
                    plain = [v for v in plain if v.seq != version.seq]
                    continue
                self._install(state, version, report, now)
                self.state_file.save(state)
        self._releases_from_store(
            self._release_versions(state, found, now), report, whole_log=listed_from == 0
        )
        if tag is not None:
            state.marker_tag = tag
        self.state_file.save(state)
        return report

    def _pins(self) -> Mapping[str, str]:
        """The pins some version may still satisfy (the others were reported once)."""
        pins = self.pins
        return {name: pin for name, pin in pins.items() if name not in self._unsatisfiable_pins}

    def _say_once(self, line: str, level: int = logging.WARNING) -> None:
        if line not in self._said:
            self._said.add(line)
            log.log(level, "%s", line)

    def _forget_missing_files(self, state: DaemonState) -> dict[str, int]:
        """Names recorded as installed whose file has gone: name -> the version it had.

        They are installed again: the newest version if it is genuine, else that one.
        """
        lost: dict[str, int] = {}
        for name in [name for name in state.installed if not (self.output_dir / name).is_file()]:
            log.warning("%s was removed from %s; installing it again", name, self.output_dir)
            lost[name] = state.installed.pop(name).version
        return lost

    def _follow_store(self, state: DaemonState) -> None:
        """Check the store record and bind the state to the store it names.

        Until it has been read once, a record this secret does not open is fatal (the
        IntegrityError reaches the CLI: exit 3); later it fails the cycle, and the daemon
        keeps what it has.
        """
        layout, secret = self.catalog.layout, self.cfg.secret
        if not self._store_checked:
            record = verify_store(self.store, layout, secret)
        else:
            try:
                record = read_store_record(self.store, layout, secret)
            except StorageError as exc:
                # Nothing to follow this time; the log itself is still authenticated.
                log.warning("cannot read the store record: %s", exc)
                return
        self._store_checked = True
        trusted = record is not None and self.catalog.trust.accepts(record.signer)
        if record is not None and not trusted and state.resets_for(record.store_id):
            # The secret seals it, and every server holds the secret: only a signature says
            # setup wrote it. A forged store id would start this state afresh (and, with the
            # newest log entries deleted, roll it back): carry on as if there were no record.
            self._say_once(
                f"{self.store.description}: the store record names store {record.store_id}, "
                "but no trusted signer signed it; not following it, carrying on with what "
                "this daemon knows"
            )
            return
        if record is not None and trusted:
            # Which log layout this store's uploads write, and Swift's web seed; kept when the
            # record goes missing. Only from a record setup signed: a forged one could hide
            # the look-back window or point the swarm at another web seed.
            self.catalog.record = record
            if self._use_temp_url is not None:
                self._use_temp_url(record.temp_url)
        elif record is not None:
            self._say_once(
                f"{self.store.description}: the store record is signed by no trusted signer; "
                "its log layout and web seed are not used"
            )
        if record is None:
            if state.store_id is not None:
                self._say_once(
                    f"{self.store.description} no longer has its store record "
                    f"(store {state.store_id}); carrying on with what this daemon knows"
                )
            return
        if state.store_id is not None and state.store_id != record.store_id:
            log.warning(
                "%s is a new store (id %s, was %s): following its log from the start",
                self.store.description,
                record.store_id,
                state.store_id,
            )
        elif state.store_id is None and (state.last_seq or state.installed):
            log.warning(
                "%s now has a store record (id %s): following its log from the start",
                self.store.description,
                record.store_id,
            )
        state.follow_store(record.store_id)

    def _collect(self, state: DaemonState, lost: dict[str, int], now: float) -> list[Version]:
        """New log entries, rejected ones due again, and the versions that retries, pins and
        held-back names need."""
        found: list[Version] = []
        handled: set[int] = set()
        retries = _RETRIES_PER_CYCLE  # rejected entries read again, at most, this cycle
        # On the tagged layout the listing starts below the cursor; what was read there before
        # is skipped (logorder.SeenWindow). On the atomic layout it starts after the cursor.
        window = SeenWindow(self.catalog.look_back, set(state.seen))
        for seq in self.catalog.listing(state.last_seq):
            if not window.is_new(seq):
                continue
            if seq in state.rejected:
                if retries <= 0 or not state.due(seq, now):
                    continue
                retries -= 1
            handled.add(seq)
            self._take(state, seq, self.catalog.read_entry(seq), found, now)
        # The others due: before the cursor (a later genuine entry moved it past them), or
        # gone from the listing.
        for seq in state.due_rejections(now, _RETRIES_PER_CYCLE):
            if seq not in handled and retries > 0:
                retries -= 1
                self._take(state, seq, self.catalog.read_entry(seq), found, now)
        # Only genuine entries move the cursor: junk (or a gap) after the last genuine entry
        # is listed again next time, so a genuine entry that later takes a lower number than
        # the junk (once it is removed) is still seen.
        state.last_seq = max([state.last_seq, *(version.seq for version in found)])
        window.note((version.seq for version in found), state.last_seq)
        state.seen = sorted(window.seen)
        plain = [v for v in found if not self.releases.claims(v.manifest.name)]
        state.note_found(v for v in plain if self.gate.for_me(v.manifest))
        self._note_skipped(state, [v for v in found if not self.gate.for_me(v.manifest)])
        state.forget_superseded_rejections(self.pins)
        wanted: dict[int, set[str]] = {}
        for source in (state.retry, state.behind(self._pins(), now), lost):
            for name, seq in source.items():
                wanted.setdefault(seq, set()).add(name)
        only_pinned = set(wanted) - set(state.retry.values()) - set(lost.values())
        only_pinned -= set(state.newest.values())
        for seq in sorted(set(wanted) - {v.seq for v in found}):
            try:
                found.append(self.catalog.read(seq))
            except NotFoundError:
                self._missing(state, seq, wanted[seq], seq in only_pinned, now)
            except IntegrityError as exc:
                self._take(state, seq, Rejected(seq, "", str(exc)), found, now)
        self._check_pins(state, found)
        return found

    def _note_skipped(self, state: DaemonState, versions: list[Version]) -> None:
        """Versions not for this server: recorded ("not targeted" in its status record),
        never installed, and never wanted again (they stay out of ``state.newest``)."""
        for version in versions:
            name = version.manifest.name
            if version.seq > state.skipped.get(name, 0):
                state.skipped[name] = version.seq
                log.info("%s version %s is not for this server", name, version.version_id)

    def _take(
        self,
        state: DaemonState,
        seq: int,
        entry: Version | Rejected | None,
        found: list[Version],
        now: float,
    ) -> None:
        """Account for one log entry read: found, rejected (again), or gone."""
        previous = state.rejected.get(seq)
        if entry is None:
            if previous is not None and previous.name is None:
                del state.rejected[seq]
                log.info("log entry %s, which failed verification, is gone", version_id(seq))
            return
        if isinstance(entry, Rejected):
            rejection = state.reject(seq, None, now, self.cfg.poll_interval)
            self.fleet.rejected_entry(seq, entry.reason)
            if previous is None:
                log.warning("ignoring log entry %s: %s", version_id(seq), entry.reason)
            else:
                log.debug(
                    "log entry %s still fails verification (%d tries)",
                    version_id(seq),
                    rejection.attempts,
                )
            return
        if previous is not None and previous.name is None:
            del state.rejected[seq]
            log.warning(
                "log entry %s verifies now (%s version %s), after %d failed tries",
                version_id(seq),
                entry.manifest.name,
                entry.version_id,
                previous.attempts,
            )
        found.append(entry)

    def _missing(
        self, state: DaemonState, seq: int, names: set[str], only_pinned: bool, now: float
    ) -> None:
        """A version wanted by name whose log entry is not in the store."""
        for name in sorted(names):
            if only_pinned:
                # Log entries are never deleted: a number the log lacks never was a version.
                self._unsatisfiable_pins.add(name)
                vid = version_id(seq)
                self._say_once(
                    f"pin {name} = {vid}: the store has no version {vid} (it never existed); "
                    f"{name} stays as it is"
                )
                continue
            state.reject(seq, name, now, self.cfg.poll_interval)
            self._say_once(f"{name} version {version_id(seq)} is no longer in the store")

    def _check_pins(self, state: DaemonState, found: list[Version]) -> None:
        """One line for each pin that names another artifact's version, and for each newer
        version a pin holds back."""
        for version in found:
            for name, pin in self.pins.items():
                if version.version_id == pin and version.manifest.name != name:
                    self._unsatisfiable_pins.add(name)
                    self._say_once(
                        f"pin {name} = {pin}: version {pin} is {version.manifest.name!r}, "
                        f"not {name!r}; {name} stays as it is"
                    )
        for name, pin in self.pins.items():
            newest = state.newest.get(name, 0)
            if newest > (parse_version_id(pin) or 0):
                self._say_once(
                    f"{name} version {version_id(newest)} is held back by the pin to version {pin}",
                    logging.INFO,
                )

    def _already_installed(self, state: DaemonState, manifest: Manifest, mode: int) -> bool:
        """The content (same SHA-256) is installed already and still there, as it was put."""
        current = state.installed.get(manifest.name)
        if current is None or (current.sha256, current.size) != (manifest.sha256, manifest.size):
            return False
        try:
            st = os.stat(self.output_dir / manifest.name, follow_symlinks=False)
        except OSError:
            return False
        return (
            stat.S_ISREG(st.st_mode)
            and st.st_size == manifest.size
            and stat.S_IMODE(st.st_mode) == mode
        )

    def _install(
        self, state: DaemonState, version: Version, report: CycleReport, now: float
    ) -> None:
        manifest = version.manifest
        name, seq = manifest.name, version.seq
        dest = self.output_dir / name
        if self._already_installed(state, manifest, manifest.mode & self.cfg.mode_mask):
            # A re-upload of the same content (a CI retry): no fetch, no hook.
            state.installed[name] = Installed(seq, manifest.sha256, manifest.size)
            state.retry.pop(name, None)
            state.rejected.pop(seq, None)
            log.info(
                "%s version %s has the content already installed (sha256 %s); recorded it, "
                "fetched nothing",
                name,
                version.version_id,
                manifest.sha256,
            )
            return
        self.fleet.installing(version)
        try:
            fetch = self.swarm.fetch if self.swarm is not None else fetch_version
            result = fetch(
                self.store,
                self.cfg.secret,
                version,
                dest,
                progress=self._moved,
                should_stop=self.stop.is_set,
                mode_mask=self.cfg.mode_mask,
            )
        except Interrupted:
            log.info("stopped while installing %s version %s", name, version.version_id)
            state.retry[name] = seq
            return
        except (IntegrityError, NotFoundError) as exc:
            state.retry.pop(name, None)
            previous = state.rejected.get(seq)
            rejection = state.reject(seq, name, now, self.cfg.poll_interval)
            wait = max(0.0, rejection.next_try - now)
            if isinstance(exc, ContentGoneError):
                # Pruned: said once per run; the retries (backed off up to an hour apart, in
                # case the content is restored) stay quiet until it is there again.
                self._say_once(f"{exc}; trying again less and less often", logging.ERROR)
                log.debug("%s; next try in %.3g s", exc, wait)
            elif isinstance(exc, NotFoundError):
                log.error(
                    "%s version %s is no longer in the store (%s); trying again in %.3g s",
                    name,
                    version.version_id,
                    exc,
                    wait,
                )
            elif previous is None or not previous.attempts:
                log.error("rejected %s version %s: %s", name, version.version_id, exc)
            else:
                log.error(
                    "%s version %s still fails verification (%d tries, next in %.3g s): %s",
                    name,
                    version.version_id,
                    rejection.attempts,
                    wait,
                    exc,
                )
            report.failed.append(str(exc))
            self.fleet.failed(version, str(exc), final=True)
            return
        except (DistsyncError, OSError) as exc:
            # An OSError here is a local file problem the transfer did not name itself.
            log.error(
                "could not install %s version %s (will retry): %s",
                name,
                version.version_id,
                exc,
            )
            state.retry[name] = seq
            report.failed.append(str(exc))
            self.fleet.failed(version, str(exc), final=False)
            return
        state.installed[name] = Installed(seq, manifest.sha256, manifest.size)
        state.retry.pop(name, None)
        previous = state.rejected.pop(seq, None)
        if previous is not None and previous.attempts:
            log.warning(
                "%s version %s verifies now, after %d failed tries",
                name,
                version.version_id,
                previous.attempts,
            )
        report.installed.append(version)
        log.info(
            "installed %s version %s sha256 %s %d bytes in %.2f s",
            name,
            version.version_id,
            manifest.sha256,
            result.size,
            result.seconds,
        )
        healthy = None
        if self.cfg.on_update:
            self._expect_silence(self.cfg.hook_timeout)
            healthy = run_hook(
                self.cfg.on_update,
                dest,
                version,
                self.cfg.hook_timeout,
                should_stop=self.stop.is_set,
            )
        self.fleet.installed(version, hook=healthy, swarm=self.swarm is not None)

    # -- releases ([[Release]], distsync.release) ------------------------------------------

    def _releases_local(self, report: CycleReport) -> None:
        """Operator requests, crash recovery, switches to kept releases: no store needed."""
        self.releases.local_pass()
        self._report_activations(report)

    def _release_versions(
        self, state: DaemonState, found: list[Version], now: float
    ) -> list[Version]:
        """The versions for ``[[Release]]`` names to note: those for this server whose wave
        has come. A version still waiting for its wave is kept in ``state.held_releases``
        and read again (its manifest) once the gate has news, until it is admitted or a newer
        version of its name takes its place."""
        mine = [v for v in found if self.gate.for_me(v.manifest)]
        for seq in sorted(set(state.held_releases) - {v.seq for v in mine}):
            if self.gate.resting(seq):
                continue
            try:
                mine.append(self.catalog.read(seq))
            except DistsyncError as exc:
                log.warning("cannot read version %d again: %s", seq, exc)
        newest: dict[str, int] = {}
        for v in mine:
            if self.releases.claims(v.manifest.name):
                newest[v.manifest.name] = max(newest.get(v.manifest.name, 0), v.seq)
        ready = []
        for v in mine:
            name = v.manifest.name
            if not self.releases.claims(name) or v.manifest.staged() is None:
                ready.append(v)
                continue
            state.held_releases.pop(v.seq, None)
            if v.seq == newest[name] and not self.gate.admit(v, now):
                state.held_releases[v.seq] = name
            elif v.seq == newest[name]:
                ready.append(v)
        # A newer version of a name replaces its held one.
        for seq, name in list(state.held_releases.items()):
            if newest.get(name, 0) > seq:
                del state.held_releases[seq]
        return ready

    def _releases_from_store(
        self, found: list[Version], report: CycleReport, *, whole_log: bool
    ) -> None:
        self.releases.note_found(found)
        fetch = self.swarm.fetch if self.swarm is not None else fetch_version

        def place(version: Version, dest: Path) -> object:
            return fetch(
                self.store,
                self.cfg.secret,
                version,
                dest,
                progress=self._moved,
                should_stop=self.stop.is_set,
                mode_mask=self.cfg.mode_mask,
            )

        def versions() -> list[Version]:
            return [v for v in self.catalog.versions() if self.gate.for_me(v.manifest)]

        self.releases.store_pass(versions, self.catalog.read, place, whole_log=whole_log)
        self._report_activations(report)

    def _report_activations(self, report: CycleReport) -> None:
        for outcome in self.releases.drain_outcomes():
            report.activations.append(outcome)
            self.fleet.activated(outcome)
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
            self._reporting(once),
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
                began = time.monotonic()
                report = self._cycle_until_stopped(watchdog)
                if report is None:
                    break
                self.fleet.cycle_done(time.monotonic() - began)
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
        """The transfer plugin's session for the daemon's lifetime (None: ranged GETs)."""
        transfer = transfer_method(self.cfg)
        if transfer is None:
            yield
            return
        self.swarm = transfer.open(self.cfg, self.store, self._presigner, self._wake.set)
        try:
            yield
        finally:
            if self.swarm is not None and not self._abandoned:
                self._farewell_until = time.monotonic() + _FAREWELL
                self.swarm.close()
            self.swarm = None

    @contextlib.contextmanager
    def _reporting(self, once: bool) -> Iterator[None]:
        """This server's status record and metrics for the daemon's lifetime (status.reporter).

        On the way out the last record says the server stopped, unless this was one
        ``--once`` cycle: a server run from a timer is not gone between its runs."""
        # The reporter's own thread writes through the counted store itself: its last record
        # goes out after the stop request, which the daemon's store calls give way to.
        self.fleet = start_reporting(self.cfg, self.counted, self.state_file.load, self.output_dir)
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
