"""``distsync rollout``, and the rollout lines of ``distsync status`` and ``upload --wait``.

All of it reads what the daemons read: the version's manifest, the status records and the
version's halt record; ``--halt``/``--continue`` write the halt record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from distsync.catalog import Catalog
from distsync.config import Config
from distsync.errors import UsageError
from distsync.manifest import Version
from distsync.rollout.halt import Halt, HaltBoard
from distsync.rollout.plan import RolloutView
from distsync.status.board import StatusBoard
from distsync.status.fleet import FleetView

__all__ = ["halted_check", "rollout_command", "view_of"]


def view_of(cfg: Config, catalog: Catalog, version: Version, fleet: FleetView) -> RolloutView:
    halt = HaltBoard(catalog.store, cfg.prefix, cfg.secret).read(version.manifest.name, version.seq)
    return RolloutView(
        fleet,
        version.manifest.name,
        version.seq,
        to=version.manifest.to,
        rollout=version.manifest.staged(),
        halted_by=halt.by if halt is not None and halt.halted else None,
    )


def halted_check(
    cfg: Config, catalog: Catalog, version: Version
) -> Callable[[FleetView], str | None] | None:
    """For ``upload --wait``: a function telling why the rollout of ``version`` is halted
    (None while it is not), or None when the version has no waves."""
    if version.manifest.staged() is None:
        return None

    def halted(fleet: FleetView) -> str | None:
        return view_of(cfg, catalog, version, fleet).halted()

    return halted


def rollout_command(
    cfg: Config, name: str, *, as_json: bool, halt: bool, resume: bool
) -> list[str]:
    """What ``distsync rollout`` prints: the waves of the newest version of ``name`` and who
    is in which, after writing a halt record when asked."""
    catalog = Catalog.open(cfg)
    version = catalog.newest(name)
    if (halt or resume) and version.manifest.staged() is None:
        raise UsageError(f"{name} version {version.version_id} was not uploaded with --waves")
    if halt or resume:
        HaltBoard(catalog.store, cfg.prefix, cfg.secret).write(
            Halt(name, version.seq, halt, cfg.uploader, time.time())
        )
    records = StatusBoard(catalog.store, cfg.prefix, cfg.secret).read_all()
    view = view_of(cfg, catalog, version, FleetView(records, time.time()))
    if as_json:
        return [json.dumps(view.to_json(), indent=2, sort_keys=True)]
    lines = view.lines()
    if halt:
        lines.insert(0, f"halted the rollout of {name} version {version.version_id}")
    elif resume:
        lines.insert(0, f"lifted the halt of {name} version {version.version_id}")
    return lines
