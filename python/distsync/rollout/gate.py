"""The daemon's side of targeting and staged rollouts.

``for_me`` is local (the manifest's ``to`` against ``Groups``, the name against ``Names``).
``admit`` decides a version with waves from the fleet's status records and the version's
halt record. Those are read only while such a version waits, and at most once per
``max(PollInterval, StatusInterval)``: a record changes no faster than its writer's
interval when nothing happens, so reading more often would only cost requests; a wave
therefore starts within about one StatusInterval of the previous one turning healthy.
The daemon's poll is unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from distsync.config import Config
from distsync.errors import DistsyncError
from distsync.manifest import Manifest, Version
from distsync.node import node_id_of
from distsync.rollout.halt import HaltBoard
from distsync.rollout.plan import Decision, RolloutView, name_wanted, targets
from distsync.status.board import StatusBoard
from distsync.status.fleet import FleetView
from distsync.status.record import ServerStatus
from distsync.storage.base import Store

__all__ = ["RolloutGate"]

log = logging.getLogger("distsync.daemon")


class RolloutGate:
    def __init__(
        self, cfg: Config, store: Store, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.names = cfg.names
        self.groups = cfg.groups
        self.every = max(cfg.poll_interval, cfg.status_interval)
        self._state_dir = cfg.daemon_state_dir()
        self._board = StatusBoard(store, cfg.prefix, cfg.secret)
        self._halts = HaltBoard(store, cfg.prefix, cfg.secret)
        self._clock = clock
        self._node: str | None = None
        self._records: list[ServerStatus] = []
        self._read_at = -math.inf
        self._halted_by: dict[int, str | None] = {}
        self._said: dict[str, str] = {}  # name -> the last reason logged
        self._held: set[int] = set()  # versions the last decision held back

    def for_me(self, manifest: Manifest) -> bool:
        return name_wanted(self.names, manifest.name) and targets(manifest.to, self.groups)

    def resting(self, seq: int) -> bool:
        """Whether version ``seq`` was held back and no new decision is due: the daemon's
        poll then need not read the log or the manifest again for it."""
        return seq in self._held and self._clock() - self._read_at < self.every

    def admit(self, version: Version, now: float) -> bool:
        """Whether this server may install ``version`` now (logged when that changes)."""
        manifest = version.manifest
        rollout = manifest.staged()
        if rollout is None:
            return True
        try:
            self._refresh(version)
        except DistsyncError as exc:
            self._held.add(version.seq)
            self._say(manifest.name, f"{manifest.name} version {version.version_id} waits: cannot "
                      f"read the fleet's status records ({exc})")  # fmt: skip
            return False
        view = RolloutView(
            FleetView(self._records, now),
            manifest.name,
            version.seq,
            to=manifest.to,
            rollout=rollout,
            halted_by=self._halted_by.get(version.seq),
        )
        if self._node is None:
            self._node = node_id_of(self._state_dir)
        decision: Decision = view.decide(self._node)
        if decision.install:
            self._held.discard(version.seq)
            self._say(manifest.name, f"{manifest.name} version {version.version_id}: installing "
                      f"with wave {(decision.wave or 0) + 1}")  # fmt: skip
            return True
        self._held.add(version.seq)
        self._say(manifest.name, f"{manifest.name} version {version.version_id} waits: "
                  f"{decision.reason}")  # fmt: skip
        return False

    def _refresh(self, version: Version) -> None:
        """The status records at most once per ``every`` (shared by every waiting version),
        and each waiting version's halt record once per such read."""
        if self._clock() - self._read_at >= self.every:
            self._records = self._board.read_all()
            self._halted_by.clear()
            self._read_at = self._clock()
        seq = version.seq
        if seq not in self._halted_by:
            halt = self._halts.read(version.manifest.name, seq)
            self._halted_by[seq] = halt.by if halt is not None and halt.halted else None

    def _say(self, name: str, line: str) -> None:
        # A waiting version is decided again every poll: log only what changed.
        if self._said.get(name) != line.split(" waits: ")[-1]:
            self._said[name] = line.split(" waits: ")[-1]
            log.info("%s", line)
