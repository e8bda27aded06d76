"""The daemon's releases: download, unpack, switch, health-gate, revert, prune, and apply
operator requests. The decisions come from ``plan``; this module does the I/O around them.

The daemon calls, once per cycle:

- ``local_pass()`` first — crash recovery, operator requests and switches to releases already
  on disk. None of it needs the store, so a rollback works while the store is down.
- ``note_found(versions)`` with the log entries the cycle read, then ``store_pass(...)``:
  fetch and activate what is not on disk yet.

Every activation ends in an ``ActivationOutcome`` (``drain_outcomes()``): healthy, or failed
with the reason — the data a fleet status record and a staged rollout's gate need.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from distsync.errors import DistsyncError, IntegrityError, LocalIOError, NotFoundError
from distsync.fsutil import local_io_error
from distsync.hooks import CommandResult, run_command
from distsync.logorder import version_id
from distsync.manifest import Version
from distsync.release import plan, requests
from distsync.release.config import ReleaseSpec
from distsync.release.layout import ReleaseLayout
from distsync.release.report import config_pin, describe
from distsync.release.state import (
    Activation,
    ActivationOutcome,
    Failure,
    ReleaseState,
    load_state,
    save_state,
)
from distsync.transfer.fetch import Interrupted

__all__ = ["Fetch", "Releases"]

log = logging.getLogger("distsync.release")

# fetch(version, dest): verify and place the artifact at dest (fetch_version or the swarm's).
Fetch = Callable[[Version, Path], object]
# Seconds between two runs of a failing HealthCheck.
_HEALTH_RETRY = 1.0
# How long a starting daemon waits for a `distsync` command that briefly holds the lock.
_LOCK_WAIT = 5.0


class _Slot:
    """One [[Release]]: its spec, its directory and what the daemon knows about it."""

    def __init__(self, spec: ReleaseSpec) -> None:
        self.spec = spec
        self.layout = ReleaseLayout(spec.dir)
        self.state = ReleaseState()
        self.announced_held: set[int] = set()

    def save(self) -> None:
        save_state(self.layout.state_path, self.state)


class Releases:
    def __init__(
        self,
        specs: Iterable[ReleaseSpec],
        pins: Mapping[str, str],
        *,
        hook_timeout: float,
        stop: threading.Event,
        expect_silence: Callable[[float], None] = lambda _seconds: None,
    ) -> None:
        self.slots = [_Slot(spec) for spec in specs]
        self.pins = dict(pins)
        self.hook_timeout = hook_timeout
        self.stop = stop
        # Told before each command how long it may run without a sign of progress (the
        # daemon's watchdog counts it as moving for that long).
        self.expect_silence = expect_silence
        self._versions: dict[int, Version] = {}
        self._outcomes: list[ActivationOutcome] = []
        # Only inside managed() (locks held, state loaded) does anything touch a release.
        self._active = False

    # -- which names are releases ---------------------------------------------------------

    def _slot_for(self, name: str) -> _Slot | None:
        """The first [[Release]] whose Match takes ``name``."""
        return next((slot for slot in self.slots if slot.spec.claims(name)), None)

    def claims(self, name: str) -> bool:
        return self._slot_for(name) is not None

    def plain_pins(self) -> dict[str, str]:
        """The pins of names that are not releases (a release's pin is a hold, handled here)."""
        return {name: pin for name, pin in self.pins.items() if not self.claims(name)}

    def drain_outcomes(self) -> list[ActivationOutcome]:
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    # -- lifetime -------------------------------------------------------------------------

    @contextlib.contextmanager
    def managed(self) -> Iterator[None]:
        """Lock every release directory for this daemon, clean up after a crash, load state."""
        with contextlib.ExitStack() as stack:
            for slot in self.slots:
                slot.layout.prepare()
                stack.enter_context(_exclusive(slot.layout))
                for leftover in slot.layout.clean():
                    log.info("removed %s left by an interrupted release step", leftover)
                slot.state = load_state(slot.layout.state_path)
            self._active = True
            try:
                yield
            finally:
                self._active = False

    # -- the local pass -------------------------------------------------------------------

    def local_pass(self) -> None:
        """Resume an interrupted activation, apply operator requests, switch to kept releases."""
        if not self._active:
            return
        for slot in self.slots:
            if self.stop.is_set():
                return
            try:
                self._recover(slot)
                self._apply_requests(slot)
                self._reconcile(slot, None, None)
            except DistsyncError as exc:
                log.error("release %s: %s", slot.spec.label, exc)

    def needs_store(self) -> bool:
        """Whether a release waits for something only the store has."""
        if not self._active:
            return False
        for slot in self.slots:
            if not slot.state.scanned:
                return True
            target = self._target(slot)
            if target is not None and target not in slot.layout.kept():
                return True  # (current is always a kept release)
        return False

    # -- the store pass -------------------------------------------------------------------

    def note_found(self, versions: Iterable[Version]) -> None:
        """Log entries the daemon read: remember those of release names."""
        if not self._active:
            return
        touched: set[int] = set()
        for version in versions:
            slot = self._slot_for(version.manifest.name)
            if slot is None:
                continue
            slot.state.note(version.seq, version.manifest.name, version.manifest.sha256)
            self._versions[version.seq] = version
            touched.add(id(slot))
        for slot in self.slots:
            if id(slot) in touched:
                slot.save()

    def store_pass(
        self,
        versions: Callable[[], list[Version]],
        read: Callable[[int], Version],
        fetch: Fetch,
        *,
        whole_log: bool = False,
    ) -> None:
        """Fetch and activate what the releases want and do not have on disk.

        ``whole_log``: the versions just noted were the whole log (a daemon's first listing),
        so a release new to this daemon needs no listing of its own.
        """
        if not self._active:
            return
        try:
            for slot in self.slots:
                if self.stop.is_set():
                    return
                try:
                    if whole_log and not slot.state.scanned:
                        slot.state.scanned = True
                        slot.save()
                    if not slot.state.scanned:
                        # A release added to a running fleet: learn the versions already there.
                        for version in versions():
                            if slot.spec.claims(version.manifest.name):
                                m = version.manifest
                                slot.state.note(version.seq, m.name, m.sha256)
                                self._versions[version.seq] = version
                        slot.state.scanned = True
                        slot.save()
                    self._reconcile(slot, read, fetch)
                except DistsyncError as exc:
                    log.error("release %s: %s (will retry)", slot.spec.label, exc)
        finally:
            self._versions.clear()

    # -- deciding -------------------------------------------------------------------------

    def _hold(self, slot: _Slot) -> int | None:
        pin = config_pin(slot.spec, self.pins)
        return pin if pin is not None else slot.state.hold

    def _target(self, slot: _Slot) -> int | None:
        available = set(slot.state.known) | set(slot.layout.kept())
        return plan.wanted(available, slot.state.failed, self._hold(slot))

    def _reconcile(
        self,
        slot: _Slot,
        read: Callable[[int], Version] | None,
        fetch: Fetch | None,
    ) -> None:
        """Bring ``current`` to the wanted version; download only when ``fetch`` is given."""
        hold = self._hold(slot)
        for version in plan.held_back(slot.state.known, slot.state.failed, hold):
            if version not in slot.announced_held:
                slot.announced_held.add(version)
                log.info(
                    "%s version %s held back: release %s is held at version %s",
                    slot.state.known[version],
                    version_id(version),
                    slot.spec.label,
                    version_id(hold) if hold is not None else None,
                )
        target = self._target(slot)
        current = slot.layout.current()
        if target is None or (current is not None and current[0] == target):
            return
        kept = slot.layout.kept()
        if target in kept:
            self._activate(slot, target, kept[target])
            return
        if read is None or fetch is None:
            return
        wanted = self._version(slot, target, read)
        if wanted is None or not self._download_and_unpack(slot, wanted, fetch):
            return
        self._activate(slot, target, wanted.manifest.name)

    def _version(self, slot: _Slot, seq: int, read: Callable[[int], Version]) -> Version | None:
        version = self._versions.get(seq)
        if version is None:
            try:
                version = read(seq)
            except NotFoundError:
                self._fail(slot, seq, slot.state.known.get(seq, "?"), "no longer in the store")
                return None
            except IntegrityError as exc:
                self._fail(slot, seq, slot.state.known.get(seq, "?"), str(exc))
                return None
        if not slot.spec.claims(version.manifest.name):
            name = version.manifest.name
            self._fail(slot, seq, name, f"{name} does not match {slot.spec.match}")
            return None
        slot.state.note(seq, version.manifest.name, version.manifest.sha256)
        return version

    # -- download and unpack --------------------------------------------------------------

    def _download_and_unpack(self, slot: _Slot, version: Version, fetch: Fetch) -> bool:
        """The release directory for ``version``, complete in ``releases/``; False if not."""
        # Here, not at the top: tarfile and the decompressors cost a daemon's start time.
        from distsync.release.unpack import ArchiveRejected, fill_release

        manifest, layout = version.manifest, slot.layout
        artifact = layout.incoming / manifest.name
        try:
            started = time.monotonic()
            if not _has_sha256(artifact, manifest.sha256):  # a crash may have left it whole
                fetch(version, artifact)
            temp = layout.new_temp_dir(version.seq, manifest.name)
            try:
                fill_release(artifact, manifest.name, temp, unpack=slot.spec.unpack)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            layout.commit(temp, version.seq, manifest.name)
            artifact.unlink(missing_ok=True)
            log.info(
                "installed %s version %s sha256 %s %d bytes in %.2f s into %s",
                manifest.name,
                version.version_id,
                manifest.sha256,
                manifest.size,
                time.monotonic() - started,
                layout.release_path(version.seq, manifest.name),
            )
            return True
        except Interrupted:
            log.info("stopped while fetching %s version %s", manifest.name, version.version_id)
        except (IntegrityError, ArchiveRejected) as exc:
            artifact.unlink(missing_ok=True)
            self._fail(slot, version.seq, manifest.name, str(exc))
        except (DistsyncError, OSError) as exc:
            log.error(
                "could not fetch or unpack %s version %s (will retry): %s",
                manifest.name,
                version.version_id,
                exc,
            )
        return False

    # -- activation -----------------------------------------------------------------------

    def _activate(self, slot: _Slot, version: int, name: str) -> None:
        layout, spec = slot.layout, slot.spec
        previous = layout.current()
        activation = Activation(
            version, name, previous[0] if previous else None, previous[1] if previous else None
        )
        env = self._env(slot, version, name, previous)
        release_dir = layout.release_path(version, name)
        log.info("activating %s version %s in %s", name, version_id(version), spec.dir)
        if spec.pre_activate:
            result = self._run(spec.pre_activate, env, release_dir, self.hook_timeout)
            if result.interrupted:
                return
            if not result.ok:
                self._fail(slot, version, name, f"PreActivate {result.describe()}")
                return
        slot.state.activating = activation
        slot.save()
        layout.switch((version, name))
        log.info("%s: current -> releases/%s", spec.dir, layout.dir_name(version, name))
        self._gate(slot, activation)

    def _gate(self, slot: _Slot, activation: Activation) -> None:
        """After the switch: health check, then PostActivate — or back to the previous one."""
        spec, version, name = slot.spec, activation.version, activation.name
        previous = None
        if activation.previous is not None and activation.previous_name is not None:
            previous = (activation.previous, activation.previous_name)
        env = self._env(slot, version, name, previous)
        release_dir = slot.layout.release_path(version, name)
        if spec.health_check:
            result = self._health(spec, env, release_dir)
            if result.interrupted:
                return  # `activating` stays recorded: the next start checks again
            if not result.ok:
                self._revert(slot, activation, f"HealthCheck {result.describe()}")
                return
        self._post_activate(spec, env, release_dir, name, version)
        slot.state.activating = None
        slot.state.failed.pop(version, None)
        self._finish(slot, version, name, healthy=True, reason=None)
        log.info("%s version %s is current and healthy in %s", name, version_id(version), spec.dir)

    def _health(self, spec: ReleaseSpec, env: dict[str, str], cwd: Path) -> CommandResult:
        """Run the HealthCheck until it passes or HealthTimeout seconds have gone by."""
        deadline = time.monotonic() + spec.health_timeout
        attempts = 0
        while True:
            attempts += 1
            remaining = max(deadline - time.monotonic(), 0.5)
            result = self._run(spec.health_check, env, cwd, remaining)
            if result.ok or result.interrupted:
                return result
            log.debug("HealthCheck attempt %d: %s", attempts, result.describe())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return CommandResult(
                    False,
                    f"{result.reason} ({attempts} attempts in {spec.health_timeout:g} s)",
                    result.output,
                )
            if self.stop.wait(min(_HEALTH_RETRY, remaining)):
                return CommandResult(False, "stopped", interrupted=True)

    def _revert(self, slot: _Slot, activation: Activation, reason: str) -> None:
        """Mark the version failed, switch back, and run PostActivate for the one restored."""
        layout, spec = slot.layout, slot.spec
        version, name = activation.version, activation.name
        if version not in slot.state.failed:
            slot.state.failed[version] = Failure(name, reason, time.time())
            slot.save()  # `activating` is still set: a crash from here on reverts again
        reason = slot.state.failed[version].reason
        previous = None
        if activation.previous_name is not None and activation.previous in layout.kept():
            assert activation.previous is not None
            previous = (activation.previous, activation.previous_name)
        layout.switch(previous)
        if previous is None:
            log.error(
                "%s version %s failed: %s; no previous release: current removed",
                name,
                version_id(version),
                reason,
            )
        else:
            log.error(
                "%s version %s failed: %s; current back to version %s",
                name,
                version_id(version),
                reason,
                version_id(previous[0]),
            )
            prev_dir = layout.release_path(*previous)
            env = self._env(slot, previous[0], previous[1], (version, name))
            self._post_activate(spec, env, prev_dir, previous[1], previous[0])
        slot.state.activating = None
        self._finish(slot, version, name, healthy=False, reason=reason)

    def _post_activate(
        self, spec: ReleaseSpec, env: dict[str, str], cwd: Path, name: str, version: int
    ) -> None:
        if not spec.post_activate:
            return
        result = self._run(spec.post_activate, env, cwd, self.hook_timeout)
        if result.ok:
            log.info("PostActivate ran for %s version %s", name, version_id(version))
        elif not result.interrupted:
            log.error(
                "PostActivate %s for %s version %s", result.describe(), name, version_id(version)
            )

    def _fail(self, slot: _Slot, version: int, name: str, reason: str) -> None:
        """A version that cannot become current: remembered, not tried again on its own."""
        log.error(
            "%s version %s rejected for %s: %s", name, version_id(version), slot.spec.dir, reason
        )
        slot.state.failed[version] = Failure(name, reason, time.time())
        self._finish(slot, version, name, healthy=False, reason=reason)

    def _finish(
        self, slot: _Slot, version: int, name: str, *, healthy: bool, reason: str | None
    ) -> None:
        current = slot.layout.current()
        outcome = ActivationOutcome(
            release=slot.spec.label,
            dir=str(slot.spec.dir),
            name=name,
            version=version_id(version),
            sha256=slot.state.sha256.get(version, ""),
            healthy=healthy,
            reason=reason,
            at=time.time(),
            current=None if current is None else version_id(current[0]),
        )
        slot.state.last = outcome
        slot.save()
        self._outcomes.append(outcome)
        self._prune(slot)

    def _prune(self, slot: _Slot) -> None:
        kept = slot.layout.kept()
        current = slot.layout.current()
        hold = self._hold(slot)
        spec = slot.spec
        doomed = plan.prune(kept, current[0] if current else None, slot.state.failed, spec.keep)
        for version in doomed:
            if version == hold:
                continue
            slot.layout.remove(version, kept[version])
            log.info(
                "removed release %s from %s (Keep = %d)", version_id(version), spec.dir, spec.keep
            )

    # -- crash recovery and requests ------------------------------------------------------

    def _recover(self, slot: _Slot) -> None:
        activation = slot.state.activating
        if activation is None:
            return
        current = slot.layout.current()
        if activation.version in slot.state.failed:
            log.warning(
                "finishing the revert of %s version %s",
                activation.name,
                version_id(activation.version),
            )
            self._revert(slot, activation, slot.state.failed[activation.version].reason)
        elif current is not None and current[0] == activation.version:
            log.warning(
                "checking %s version %s again: its activation was interrupted",
                activation.name,
                version_id(activation.version),
            )
            self._gate(slot, activation)
        else:
            slot.state.activating = None  # the switch never happened; it is simply redone
            slot.save()

    def _apply_requests(self, slot: _Slot) -> None:
        for request in requests.pending(slot.layout):
            if isinstance(request, tuple):
                request_id, problem = request
                answer = {"ok": False, "refused": True, "message": problem}
                requests.answer(slot.layout, request_id, answer)
                continue
            try:
                result = self._apply(slot, request)
            except DistsyncError as exc:
                result = {"ok": False, "refused": False, "message": str(exc)}
            result["release"] = describe(slot.spec, self.pins, slot.state)
            requests.answer(slot.layout, request.id, result)

    def _apply(self, slot: _Slot, request: requests.Request) -> dict[str, Any]:
        pin = config_pin(slot.spec, self.pins)
        if pin is not None:
            return {
                "ok": False,
                "refused": True,
                "message": f"{slot.spec.label} is held at version {version_id(pin)} by a Pin "
                "in the "
                "configuration; change the Pin instead",
            }
        state, layout = slot.state, slot.layout
        if request.action == "resume":
            state.hold = None
            slot.announced_held.clear()
            slot.save()
            log.info("release %s resumed: the newest healthy version is installed", slot.spec.label)
            self._reconcile(slot, None, None)
            return {"ok": True, "message": "resumed"}
        current = layout.current()
        kept = layout.kept()
        if request.to is None:
            target = plan.previous(current[0] if current else None, kept, state.failed)
            if target is None:
                message = "no earlier release is kept to roll back to"
                return {"ok": False, "refused": True, "message": message}
        else:
            target = request.to
            if target not in kept and target not in state.known:
                return {
                    "ok": False,
                    "refused": True,
                    "message": f"version {version_id(target)} is not a known version of "
                    f"{slot.spec.label}",
                }
            # An operator's explicit choice is tried again, even after a failure.
            state.failed.pop(target, None)
        state.hold = target
        slot.save()
        vid = version_id(target)
        log.info("release %s rolled back: held at version %s", slot.spec.label, vid)
        before = state.last
        self._reconcile(slot, None, None)
        if state.last is not before and state.last is not None and not state.last.healthy:
            message = f"version {vid} failed: {state.last.reason}"
            return {"ok": False, "refused": False, "message": message}
        if target not in layout.kept():
            return {"ok": True, "message": f"held at version {vid}; fetching it from the store"}
        return {"ok": True, "message": f"current is version {vid}, held"}

    # -- helpers --------------------------------------------------------------------------

    def _env(
        self, slot: _Slot, version: int, name: str, previous: tuple[int, str] | None
    ) -> dict[str, str]:
        layout = slot.layout
        return {
            "DISTSYNC_RELEASE_DIR": str(layout.release_path(version, name)),
            "DISTSYNC_PREVIOUS_DIR": str(layout.release_path(*previous)) if previous else "",
            "DISTSYNC_NAME": name,
            "DISTSYNC_VERSION": version_id(version),
            "DISTSYNC_SHA256": slot.state.sha256.get(version, ""),
        }

    def _run(
        self, argv: tuple[str, ...], env: dict[str, str], cwd: Path, timeout: float
    ) -> CommandResult:
        self.expect_silence(timeout)
        return run_command(argv, env=env, cwd=cwd, timeout=timeout, should_stop=self.stop.is_set)


def _has_sha256(path: Path, expected: str) -> bool:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == expected


@contextlib.contextmanager
def _exclusive(layout: ReleaseLayout) -> Iterator[None]:
    """One daemon per release directory, for as long as it runs."""
    try:
        fd = os.open(layout.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise local_io_error("create", layout.lock_path, exc) from None
    try:
        deadline = time.monotonic() + _LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # `distsync rollback` tests the lock for an instant; another daemon holds it.
                if time.monotonic() >= deadline:
                    raise LocalIOError(
                        f"another distsync daemon manages the release directory {layout.root}"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
