"""The fleet as its status records tell it: who has which version, who failed and why.

Pure (python-tuf's trusted_metadata_set is the model): ``FleetView`` is fed decoded records
and the time, and answers the questions of ``distsync status``, ``upload --wait``, the
``distsync_info`` module, and later the rollout gate and retention. No I/O, no clock.

One server's standing toward one version of a name, first match wins:

- ``installed``: it has that version or a newer one (a newer upload supersedes the one waited
  for: daemons install only the newest), and its OnUpdate hook did not fail on it;
- ``unhealthy``: it installed that version but the OnUpdate hook failed;
- ``failed``: it rejected that version for good (it failed verification);
- ``pinned``: a ``[Pin]`` holds the name at another version;
- ``retrying``: its last attempt failed for a passing reason (store, disk), retried each poll;
- ``not targeted``: the version is not for it (the upload's ``--to`` names none of its
  groups, or its ``Names`` leave the name out); not counted anywhere;
- ``behind``: it has an older version or none (yet).

A server is live while its record is unexpired and it did not report stopping; ``--all``
waits for the live servers that are not pinned elsewhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from distsync.logorder import parse_version_id, version_id
from distsync.status.record import ArtifactStatus, ServerStatus

__all__ = ["FleetView", "Standing", "Verdict", "ago"]

REACHED = ("installed",)
FAILED = ("failed", "unhealthy")
UNTARGETED = "not targeted"
_LISTED = 8  # servers named per kind in a one-line message; the rest are counted


@dataclass(frozen=True)
class Standing:
    server: ServerStatus
    label: str
    state: str  # installed, unhealthy, failed, pinned, retrying, not targeted, behind
    detail: str  # what to say after the label, e.g. "has version 41"
    live: bool


@dataclass(frozen=True)
class Verdict:
    """Where a wait for one version stands: done, failed, or still waiting."""

    done: bool
    failed: bool
    reached: int
    wanted: int
    message: str


def ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


class FleetView:
    def __init__(self, records: Iterable[ServerStatus], now: float) -> None:
        self.now = now
        self.servers = sorted(records, key=lambda s: (s.name, s.node))
        names = Counter(server.name for server in self.servers)
        short = Counter((s.name, s.node[:8]) for s in self.servers)

        def label(s: ServerStatus) -> str:
            # Servers may share a NodeName: tell them apart by the start of their node ids
            # (the whole id in the unlikely case that the start is shared too).
            if names[s.name] == 1:
                return s.name
            return f"{s.name}#{s.node[:8] if short[s.name, s.node[:8]] == 1 else s.node}"

        self._labels = {s.node: label(s) for s in self.servers}

    # -- per server ------------------------------------------------------------------------

    def label(self, server: ServerStatus) -> str:
        return self._labels[server.node]

    def liveness(self, server: ServerStatus) -> str:
        if server.stopped:
            return "stopped"
        return "live" if server.live(self.now) else "stale"

    def names(self) -> list[str]:
        found = {name for s in self.servers for name in (*s.artifacts, *s.pins)}
        return sorted(found)

    def target(self, name: str) -> int | None:
        """The newest version of ``name`` any server knows of (installed, seen in the log,
        pinned, or failed): what the fleet should converge on unless a pin says otherwise."""
        seen: list[int] = []
        for server in self.servers:
            item = server.artifacts.get(name)
            if item is not None:
                seen += [v for v in (item.version, item.newest) if v is not None]
                if item.failure is not None:
                    seen.append(item.failure.version)
        return max(seen, default=None)

    # -- one version -----------------------------------------------------------------------

    def standing(self, server: ServerStatus, name: str, seq: int) -> Standing:
        item = server.artifacts.get(name, ArtifactStatus())
        live = server.live(self.now)

        def standing(state: str, detail: str) -> Standing:
            return Standing(server, self.label(server), state, detail, live)

        have = item.version
        failure = item.failure
        if have is not None and have >= seq:
            if have == seq and item.hook == "failed":
                return standing("unhealthy", "its OnUpdate hook failed")
            return standing(
                "installed", "" if have == seq else f"has newer version {version_id(have)}"
            )
        if failure is not None and failure.version == seq and failure.final:
            return standing("failed", failure.reason)
        pin = server.pins.get(name)
        if pin is not None and parse_version_id(pin) != seq:
            return standing("pinned", f"pinned to version {pin}")
        if failure is not None and failure.version == seq:
            return standing("retrying", f"retrying: {failure.reason}")
        if item.skipped == seq:
            return standing("not targeted", "not targeted")
        return standing(
            "behind", f"has version {version_id(have)}" if have is not None else "has none"
        )

    def standings(self, name: str, seq: int) -> list[Standing]:
        return [self.standing(server, name, seq) for server in self.servers]

    def counted(self, name: str, seq: int) -> list[Standing]:
        """The servers a fleet-wide statement is about: live ones, and any that report this
        version installed or failed (a record written since the upload is evidence, even if
        its server stopped since)."""
        return [
            s
            for s in self.standings(name, seq)
            if (s.live or s.state in REACHED or s.state in FAILED) and s.state != UNTARGETED
        ]

    def summary(self, name: str, seq: int) -> str:
        """'5 of 6 servers have app.tar.gz version 42; srv-3 failed: <reason>; ...'"""
        counted = self.counted(name, seq)
        have = [s for s in counted if s.state in REACHED]
        parts = [f"{len(have)} of {len(counted)} servers have {name} version {version_id(seq)}"]
        for state in ("failed", "unhealthy", "retrying", "pinned", "behind"):
            group = [s for s in counted if s.state == state]
            if group:
                parts.append(f"{state}: {self._listing(group)}")
        quiet = [s for s in self.standings(name, seq) if s not in counted and s.state != UNTARGETED]
        if quiet:
            parts.append(f"not reporting: {self._listing(quiet, seen='first')}")
        return "; ".join(parts)

    def verdict(self, name: str, seq: int, servers: int | None) -> Verdict:
        """Whether ``servers`` servers (None: every live server not pinned elsewhere) report
        ``seq`` installed. Any server reporting it failed ends the wait at once."""
        standings = self.standings(name, seq)
        reached = [s for s in standings if s.state in REACHED]
        failed = [s for s in standings if s.state in FAILED]
        if servers is None:
            wanted_set = [s for s in standings if s.live and s.state not in ("pinned", UNTARGETED)]
            wanted = len(wanted_set)
            missing = [s for s in wanted_set if s.state not in REACHED]
            done = bool(wanted_set) and not missing
        else:
            wanted = servers
            missing = [s for s in standings if s.state not in (*REACHED, UNTARGETED)]
            done = len(reached) >= servers
        head = f"{name} version {version_id(seq)}: {len(reached)} of {wanted} servers installed it"
        if failed:
            message = f"{head}; failed: {self._listing(failed)}"
            return Verdict(False, True, len(reached), wanted, message)
        parts = [head]
        if not done:
            if not standings:
                parts.append("no server has reported status yet")
            elif servers is None and not wanted:
                parts.append("no live server reports status")
            if missing:
                parts.append(f"missing: {self._listing(missing, seen='after')}")
        return Verdict(done, False, len(reached), wanted, "; ".join(parts))

    def _listing(self, standings: list[Standing], *, seen: str = "") -> str:
        """'srv-3 (reason), srv-4 (has version 41) and 2 more': at most ``_LISTED`` named.

        ``seen="first"`` leads each detail with how the server stands and when it was last
        heard from (servers not reporting); ``seen="after"`` adds that for servers that are
        not live (servers missing from a wait)."""
        texts = []
        for s in standings[:_LISTED]:
            detail = "" if s.state == "installed" else s.detail
            heard = f"{self.liveness(s.server)}, last seen {ago(self.now - s.server.written_at)}"
            if seen == "first":
                detail = f"{heard}, {detail}"
            elif seen == "after" and not s.live:
                detail = f"{detail}; {heard}"
            texts.append(f"{s.label} ({detail})" if detail else s.label)
        more = len(standings) - _LISTED
        return ", ".join(texts) + (f" and {more} more" if more > 0 else "")

    # -- the stable JSON of ``distsync status --json`` (docs/status.md) --------------------

    def to_json(self, name: str | None = None, seq: int | None = None) -> dict[str, Any]:
        names = [name] if name is not None else self.names()
        targets = {n: (seq if seq is not None and n == name else self.target(n)) for n in names}
        artifacts = []
        for n in names:
            target = targets[n]
            if target is None:
                continue
            standings = self.counted(n, target)
            by_state: dict[str, dict[str, str]] = {}
            for s in standings:
                by_state.setdefault(s.state, {})[s.label] = s.detail
            artifacts.append(
                {
                    "name": n,
                    "version": version_id(target),
                    "servers": len(standings),
                    "installed": sorted(by_state.get("installed", {})),
                    **{
                        state: by_state.get(state, {})
                        for state in ("unhealthy", "failed", "pinned", "retrying", "behind")
                    },
                    "summary": self.summary(n, target),
                }
            )
        return {
            "now": self.now,
            "servers": [self._server_json(s, names, targets) for s in self.servers],
            "artifacts": artifacts,
        }

    def marks(self, server: ServerStatus, name: str, target: int | None) -> list[str]:
        marks = []
        if target is not None:
            state = self.standing(server, name, target).state
            if state in FAILED:
                marks.append("failed")
            elif state in ("behind", "retrying"):
                marks.append("behind")
        if name in server.pins:
            marks.append("pinned")
        if not server.live(self.now):
            marks.append("stale")
        return marks

    def _server_json(
        self, server: ServerStatus, names: list[str], targets: dict[str, int | None]
    ) -> dict[str, Any]:
        artifacts = {}
        for name in names:
            item = server.artifacts.get(name)
            if item is None and name not in server.pins:
                continue
            item = item or ArtifactStatus()
            failure = item.failure
            artifacts[name] = {
                "version": None if item.version is None else version_id(item.version),
                "sha256": item.sha256,
                "installed_at": item.installed_at,
                "newest": None if item.newest is None else version_id(item.newest),
                "hook": item.hook,
                "pinned": server.pins.get(name),
                "not_targeted": None if item.skipped is None else version_id(item.skipped),
                "failure": None
                if failure is None
                else {
                    "version": version_id(failure.version),
                    "reason": failure.reason,
                    "at": failure.at,
                    "final": failure.final,
                },
                "marks": self.marks(server, name, targets.get(name)),
            }
        return {
            "node": server.node,
            "name": server.name,
            "label": self.label(server),
            "groups": list(server.groups),
            "daemon": server.daemon,
            "state": self.liveness(server),
            "last_seen": server.written_at,
            "seconds_since_seen": round(max(self.now - server.written_at, 0.0), 3),
            "interval": server.interval,
            "started_at": server.started_at,
            "last_poll": server.last_poll,
            "bytes_from_store": server.bytes_store,
            "bytes_from_peers": server.bytes_peers,
            "artifacts": artifacts,
        }
