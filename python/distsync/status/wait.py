"""``upload --wait``: read the fleet's status records until enough servers report a version
installed, one reports it failed, or the time is up.

Each round costs one listing and one GET per server record (``StatusBoard.read_all``);
rounds are ``_pause`` apart: 1 s for a small fleet, longer for a big one, so a wait on
10,000 servers reads each record about every 30 s rather than every second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from distsync.config import Config
from distsync.errors import FleetError, StorageError, UsageError
from distsync.logorder import version_id
from distsync.status.board import StatusBoard
from distsync.status.fleet import FleetView, Verdict
from distsync.storage.base import Store

__all__ = ["wait_for_upload", "wait_for_version"]

_MIN_PAUSE = 1.0
_MAX_PAUSE = 30.0


def _pause(records: int) -> float:
    return min(max(_MIN_PAUSE, records / 300), _MAX_PAUSE)


def wait_for_upload(
    cfg: Config,
    store: Store,
    name: str,
    seq: int,
    *,
    servers: int | None,
    timeout: float,
    progress: Callable[[Verdict], None] | None = None,
    halted: Callable[[FleetView], str | None] | None = None,
) -> Verdict:
    """``upload --wait`` and the ``distsync_upload`` module's ``wait``: the store's records."""
    board = StatusBoard(store, cfg.prefix, cfg.secret)
    return wait_for_version(
        board, name, seq, servers=servers, timeout=timeout, progress=progress, halted=halted
    )


def wait_for_version(
    board: StatusBoard,
    name: str,
    seq: int,
    *,
    servers: int | None,
    timeout: float,
    progress: Callable[[Verdict], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    halted: Callable[[FleetView], str | None] | None = None,
) -> Verdict:
    """Return the verdict once done; FleetError (exit 6) on a failure or the timeout.

    ``servers``: how many must report it installed; None: every live server not pinned
    elsewhere (at least one). ``halted`` (a staged rollout, distsync.rollout) says why no
    further wave will install it: that ends the wait too."""
    if servers is not None and servers < 1:
        raise UsageError("--servers must be at least 1")
    if timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    deadline = clock() + timeout
    while True:
        try:
            records = board.read_all()
        except StorageError:
            # A store that fails for a moment must not end a long wait; one that keeps
            # failing ends it with its own error (exit 4).
            if clock() >= deadline:
                raise
            sleep(min(_MIN_PAUSE, max(deadline - clock(), 0.0)))
            continue
        view = FleetView(records, clock())
        verdict = view.verdict(name, seq, servers)
        if progress is not None:
            progress(verdict)
        if verdict.done:
            return verdict
        why = halted(view) if halted is not None else None
        if why is not None:
            raise FleetError(f"{name} version {version_id(seq)}: {why}")
        if verdict.failed:
            raise FleetError(verdict.message)
        remaining = deadline - clock()
        if remaining <= 0:
            raise FleetError(f"timed out after {timeout:.0f} s: {verdict.message}")
        sleep(min(_pause(len(records)), remaining))
