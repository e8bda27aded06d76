"""Retention: delete the stored contents of old versions, and contents no log entry names.

The log entries stay (they are small and carry the sequence that orders versions); only the
ciphertext under ``objects/`` goes. A version whose content is gone is *pruned*: ``list``
hides it, ``list --all`` shows it so, and a daemon that still wants it says so in one line.

``plan_prune`` and ``plan_orphans`` are pure: they are fed the log, what the store holds,
what the fleet reports and the time, and decide. ``prune`` and ``prune_orphans`` do the
talking to the store around them.

The fleet's word wins over ``--keep``: a version that a server whose status record has not
expired reports installed, or pinned, is never deleted (a cleanly stopped server counts: it
comes back with what it had). Uploaders' clocks only ever make ``--older-than`` keep more or
less; which versions are newest is the log's sequence, not a clock.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distsync.catalog import Catalog, Rejected
from distsync.errors import (
    AccessDeniedError,
    IntegrityError,
    NotFoundError,
    StorageError,
    UnknownArtifactError,
    UsageError,
)
from distsync.logorder import parse_version_id
from distsync.manifest import Version
from distsync.status.record import ServerStatus
from distsync.storage.base import Store, StoredObject

__all__ = [
    "ORPHAN_AGE",
    "OrphanPlan",
    "Protected",
    "PrunePlan",
    "fleet_protection",
    "inventory",
    "parse_duration",
    "plan_orphans",
    "plan_prune",
    "present_objects",
    "prune",
    "prune_orphans",
]

log = logging.getLogger(__name__)

# An upload stores its content first and claims its log entry after: a content younger than
# this may belong to an upload still under way, so ``--orphans`` leaves it alone.
ORPHAN_AGE = 24 * 3600.0

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|min|m|h|d|w)?")


def parse_duration(text: str) -> float:
    """``90`` (seconds), ``90s``, ``30m``/``30min``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise UsageError(
            f"{text!r} is not a duration (a number with s, m, h, d or w, like 36h or 7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True)
class Protected:
    """Why the fleet needs a version: ``installed on srv-1, pinned on srv-2``."""

    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return ", ".join(self.reasons)


@dataclass
class PrunePlan:
    delete: list[Version] = field(default_factory=list)
    kept_for_fleet: list[tuple[Version, Protected]] = field(default_factory=list)
    kept: list[Version] = field(default_factory=list)  # the newest N of each name

    @property
    def bytes(self) -> int:
        return sum(version.manifest.object_size for version in self.delete)


@dataclass
class OrphanPlan:
    delete: list[StoredObject] = field(default_factory=list)
    too_young: list[StoredObject] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(item.size for item in self.delete)


def plan_prune(
    versions: Iterable[Version],
    present: set[str],
    *,
    keep: int,
    names: Sequence[str] = (),
    older_than: float | None = None,
    now: float,
    protected: Mapping[int, Protected] | None = None,
    incoming: int = 0,
) -> PrunePlan:
    """Per name (all names, or ``names``), the versions whose content goes: all but the
    newest ``keep`` of those whose content is still there, and with ``older_than`` only
    those uploaded longer ago than that. A content that a kept version also names stays.

    ``incoming`` versions are about to be uploaded and count among the ``keep`` (what
    ``upload --keep`` would delete in check mode)."""
    if keep < 1:
        raise UsageError("--keep must be at least 1 (the newest version always stays)")
    protected = protected or {}
    by_name: dict[str, list[Version]] = {}
    for version in versions:
        if version.manifest.object_key in present:
            by_name.setdefault(version.manifest.name, []).append(version)
    plan = PrunePlan()
    wanted = set(names)
    for name in sorted(by_name):
        newest_first = sorted(by_name[name], key=lambda v: v.seq, reverse=True)
        if wanted and name not in wanted:
            plan.kept += newest_first
            continue
        slots = max(keep - incoming, 0)
        plan.kept += newest_first[:slots]
        for version in newest_first[slots:]:
            young = older_than is not None and now - version.manifest.uploaded_at < older_than
            if young:
                plan.kept.append(version)
            elif version.seq in protected:
                plan.kept_for_fleet.append((version, protected[version.seq]))
            else:
                plan.delete.append(version)
    still_named = {v.manifest.object_key for v in plan.kept}
    still_named |= {v.manifest.object_key for v, _why in plan.kept_for_fleet}
    plan.delete = [v for v in plan.delete if v.manifest.object_key not in still_named]
    return plan


def plan_orphans(
    referenced: set[str], stored: Iterable[StoredObject], *, min_age: float, now: float
) -> OrphanPlan:
    """Contents no genuine log entry names, old enough not to be an upload under way."""
    plan = OrphanPlan()
    for item in sorted(stored, key=lambda item: item.key):
        if item.key in referenced:
            continue
        (plan.delete if now - item.modified >= min_age else plan.too_young).append(item)
    return plan


def fleet_protection(cfg: Any, store: Store, now: float) -> dict[int, Protected]:
    """Version -> why, for every version a server whose record has not expired reports
    installed or pinned (``distsync status``'s records; none when there are none).

    Stricter than ``distsync status``: a record that cannot be read (the store failed) ends
    the prune before anything is deleted, since it may be the one that protects a version.
    A record that fails authentication is no server's word and is passed over."""
    from distsync.status import StatusBoard
    from distsync.status.record import STATUS_RECORD, open_status
    from distsync.transfer.parallel import ordered_map

    board = StatusBoard(store, cfg.prefix, cfg.secret)

    def read(node: str) -> ServerStatus | None:
        key = board.key(node)
        try:
            return open_status(cfg.secret, key, store.get(key, limit=STATUS_RECORD.max_size))
        except NotFoundError:
            return None  # expired since the listing
        except IntegrityError as exc:
            log.warning("ignoring status record: %s", exc)
            return None
        except StorageError as exc:
            raise StorageError(
                f"cannot read status record {key} ({exc}); nothing was deleted, since it may "
                "protect a version"
            ) from None

    reasons: dict[int, list[str]] = {}
    for server in ordered_map(read, board.node_ids(), workers=16):
        if server is None or now > server.expires:
            continue  # gone for good (a live one rewrites its record long before)
        for item in server.artifacts.values():
            if item.version is not None:
                reasons.setdefault(item.version, []).append(f"installed on {server.name}")
        for pin in server.pins.values():
            pinned = parse_version_id(pin)  # "42", or "42.9f3ac2e07b5d" (logorder)
            if pinned is not None:
                reasons.setdefault(pinned, []).append(f"pinned on {server.name}")
    return {seq: Protected(tuple(sorted(set(why)))) for seq, why in reasons.items()}


def inventory(store: Store, prefix: str) -> list[StoredObject]:
    """Every object under ``prefix`` with its size and age (the store's ``inventory``)."""
    listing = getattr(store, "inventory", None)
    if listing is None:
        raise UsageError(f"{store.description} cannot tell the age of its objects")
    return list(listing(prefix))


def present_objects(catalog: Catalog) -> set[str] | None:
    """The content keys the store holds (one listing), or None when this identity may not
    list them (an uploader of a setup older than retention)."""
    prefix = catalog.layout.objects_prefix
    try:
        return set(catalog.store.list_after(prefix, prefix))
    except AccessDeniedError:
        return None


def _denied(exc: AccessDeniedError) -> StorageError:
    return AccessDeniedError(
        f"{exc} (this identity may not delete contents: run `distsync setup` again with the "
        "same --setup-id to grant the uploader s3:DeleteObject on objects/*, docs/setup-s3.md)"
    )


def prune(
    cfg: Any,
    catalog: Catalog,
    *,
    keep: int,
    names: Sequence[str] = (),
    older_than: float | None = None,
    dry_run: bool = False,
    now: float | None = None,
    deleted: list[Version] | None = None,
    incoming: int = 0,
) -> PrunePlan:
    """Plan from the log, what the store holds and the fleet's records; delete unless
    ``dry_run``. Each deleted version is appended to ``deleted`` as it goes, so a failure
    half-way still tells what is gone (a run again finishes the job)."""
    now = time.time() if now is None else now
    present = present_objects(catalog)
    if present is None:
        raise AccessDeniedError(
            f"{catalog.store.description}: this identity may not list the contents "
            "(objects/); run `distsync setup` again with the same --setup-id (docs/setup-s3.md)"
        )
    versions = catalog.versions()
    unknown = sorted(set(names) - {v.manifest.name for v in versions})
    if unknown:
        raise UnknownArtifactError(
            f"no artifact named {', '.join(map(repr, unknown))} in {catalog.store.description}"
        )
    plan = plan_prune(
        versions,
        present,
        keep=keep,
        names=names,
        older_than=older_than,
        now=now,
        protected=fleet_protection(cfg, catalog.store, now),
        incoming=incoming,
    )
    if not dry_run:
        for version in plan.delete:
            try:
                catalog.store.delete(version.manifest.object_key)
            except AccessDeniedError as exc:
                raise _denied(exc) from None
            if deleted is not None:
                deleted.append(version)
    return plan


def prune_orphans(
    catalog: Catalog,
    *,
    min_age: float = ORPHAN_AGE,
    dry_run: bool = False,
    now: float | None = None,
) -> OrphanPlan:
    """Delete contents no genuine log entry names, older than ``min_age``.

    Refused while any log entry fails verification: its content cannot be told from an
    orphan, and a tampered entry may become genuine again (daemons retry it)."""
    now = time.time() if now is None else now
    referenced: set[str] = set()
    rejected: list[int] = []
    for entry in catalog.entries_after(0):
        if isinstance(entry, Rejected):
            rejected.append(entry.seq)
        else:
            referenced.add(entry.manifest.object_key)
    if rejected:
        raise StorageError(
            f"{len(rejected)} log entries fail verification (first {rejected[0]}): the contents "
            "they would name cannot be told from orphans; nothing was deleted"
        )
    plan = plan_orphans(
        referenced,
        inventory(catalog.store, catalog.layout.objects_prefix),
        min_age=min_age,
        now=now,
    )
    if not dry_run:
        for item in plan.delete:
            try:
                catalog.store.delete(item.key)
            except AccessDeniedError as exc:
                raise _denied(exc) from None
    return plan
