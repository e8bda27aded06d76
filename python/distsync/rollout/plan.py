"""The pure decisions of targeting and staged rollouts: no I/O, no clock.

Every server computes the same waves from the same status records, with no coordinator:
the candidates of a version are the servers it targets that are live (or report it
installed or failed: a record is evidence even after its writer stopped), ranked by a
rendezvous hash of (node id, version); wave sizes are cumulative, absolute numbers or
percentages of the candidates. A new version gets a new order, so the canary is not always
the same server.

A server of wave k installs once every candidate of waves < k reports the version
installed and healthy, and ``wave_wait`` seconds have passed since the last of them did.
Any candidate reporting it failed (verification, OnUpdate hook) halts the rollout: no
later wave installs it. A server silent for three of its status intervals is no longer
live, so it drops out of the candidates and cannot block the rollout; since the ranks are
recomputed on the live candidates, wave 0 always has a live member, and the gate is never
skipped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distsync.logorder import version_id
from distsync.status.fleet import FAILED, REACHED, FleetView
from distsync.status.record import ServerStatus

__all__ = [
    "MAX_WAVES",
    "Decision",
    "Rollout",
    "RolloutView",
    "name_wanted",
    "parse_waves",
    "rank",
    "targets",
    "wave_sizes",
]

MAX_WAVES = 20
MAX_WAVE_WAIT = 7 * 86400.0
MAX_GROUPS = 64


def parse_waves(text: str | Sequence[str]) -> tuple[str, ...]:
    """'1,10%,50%,100%' -> ('1', '10%', '50%', '100%'); ValueError says what is wrong.

    Each wave is a cumulative size: a number of servers (at least 1) or a percentage
    (above 0, at most 100) of the targeted live servers. The last must be 100%: a rollout
    that stops short would leave servers behind with nothing to say why."""
    items = text.split(",") if isinstance(text, str) else list(text)
    waves = tuple(item.strip() for item in items)
    if not waves or len(waves) > MAX_WAVES:
        raise ValueError(f"give 1 to {MAX_WAVES} waves, e.g. 1,10%,100%")
    for wave in waves:
        if wave.endswith("%"):
            number = wave[:-1]
            if not number.isdigit() or not 0 < int(number) <= 100:
                raise ValueError(f"wave {wave!r}: a percentage is 1% to 100%")
        elif not wave.isdigit() or int(wave) < 1:
            raise ValueError(f"wave {wave!r}: a wave is a number of servers or a percentage")
    if waves[-1] != "100%":
        raise ValueError("the last wave must be 100%")
    return waves


def wave_sizes(waves: Sequence[str], candidates: int) -> list[int]:
    """Cumulative sizes for ``candidates`` servers: never decreasing, never above it."""
    sizes, previous = [], 0
    for wave in waves:
        size = math.ceil(int(wave[:-1]) * candidates / 100) if wave.endswith("%") else int(wave)
        previous = max(previous, min(size, candidates))
        sizes.append(previous)
    return sizes


def rank(node: str, seq: int) -> bytes:
    """The rendezvous hash of (node id, version): lower ranks go first."""
    return hashlib.sha256(f"distsync rollout\0{node}\0{seq}".encode()).digest()


def name_wanted(globs: Sequence[str] | None, name: str) -> bool:
    """Whether the daemon's ``Names`` (None: everything) takes ``name``."""
    return globs is None or any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def targets(to: Sequence[str] | None, groups: Iterable[str]) -> bool:
    """Whether a manifest's ``to`` (None: every server) reaches a server in ``groups``."""
    return to is None or bool(set(to) & set(groups))


@dataclass(frozen=True)
class Rollout:
    """A manifest's staged-rollout settings."""

    waves: tuple[str, ...]
    wave_wait: float = 0.0

    def to_manifest(self) -> dict[str, Any]:
        return {"waves": list(self.waves), "wave_wait": self.wave_wait}

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any]) -> Rollout:
        """ValueError/TypeError when malformed (the manifest reader turns it into a
        FormatError)."""
        if set(raw) != {"waves", "wave_wait"}:
            raise ValueError("unexpected rollout fields")
        if not isinstance(raw["waves"], list) or not all(isinstance(w, str) for w in raw["waves"]):
            raise TypeError("waves is not a list of strings")
        wait = raw["wave_wait"]
        if isinstance(wait, bool) or not isinstance(wait, (int, float)):
            raise TypeError("wave_wait is not a number")
        if not (math.isfinite(wait) and 0 <= wait <= MAX_WAVE_WAIT):
            raise ValueError("wave_wait is out of range")
        return cls(parse_waves(raw["waves"]), float(wait))


@dataclass(frozen=True)
class Decision:
    """What the gate says about one server and one version."""

    install: bool
    wave: int | None  # this server's wave (0-based), None when it is not a candidate
    reason: str  # why not (empty when install)


class RolloutView:
    """One version's rollout as the status records tell it."""

    def __init__(
        self,
        fleet: FleetView,
        name: str,
        seq: int,
        *,
        to: Sequence[str] | None,
        rollout: Rollout | None,
        halted_by: str | None = None,
    ) -> None:
        self.fleet = fleet
        self.name = name
        self.seq = seq
        self.rollout = rollout
        self.halted_by = halted_by  # an operator's halt record: who wrote it
        standings = [
            s
            for s in fleet.counted(name, seq)
            if targets(to, s.server.groups) and s.state not in ("pinned", "not targeted")
        ]
        standings.sort(key=lambda s: rank(s.server.node, seq))
        self.candidates = standings
        waves = rollout.waves if rollout is not None else ("100%",)
        self.sizes = wave_sizes(waves, len(standings))
        self.wave_of: dict[str, int] = {}
        wave = 0
        for index, standing in enumerate(standings):
            while index >= self.sizes[wave]:
                wave += 1
            self.wave_of[standing.server.node] = wave

    def members(self, wave: int) -> list[str]:
        return [s.label for s in self.candidates if self.wave_of[s.server.node] == wave]

    def failure(self) -> str | None:
        """'halted at wave 1: srv-3 failed: <reason>', or None while nothing failed."""
        for s in self.candidates:
            if s.state in FAILED:
                wave = self.wave_of[s.server.node]
                return f"halted at wave {wave + 1}: {s.label} failed: {s.detail}"
        return None

    def halted(self) -> str | None:
        """Why no further wave installs: a failure, or an operator's halt record."""
        failure = self.failure()
        if failure is not None:
            return failure
        if self.halted_by is not None:
            return f"halted by {self.halted_by} (distsync rollout --continue lifts it)"
        return None

    def decide(self, node: str) -> Decision:
        """Whether the server ``node`` may install the version now."""
        halted = self.halted()
        wave = self.wave_of.get(node)
        if halted is not None:
            return Decision(False, wave, halted)
        if wave is None:
            return Decision(False, None, "this server's status record is not in yet")
        if wave == 0:
            return Decision(True, 0, "")
        earlier = [s for s in self.candidates if self.wave_of[s.server.node] < wave]
        missing = [s for s in earlier if s.state not in REACHED]
        if missing:
            return Decision(
                False,
                wave,
                f"in wave {wave + 1}, waiting for {len(missing)} server(s) of earlier waves",
            )
        wait = self.rollout.wave_wait if self.rollout is not None else 0.0
        done = max((_installed_at(s.server, self.name) for s in earlier), default=0.0)
        if self.fleet.now < done + wait:
            until = time.strftime("%H:%M:%S UTC", time.gmtime(done + wait))
            return Decision(False, wave, f"in wave {wave + 1}, waiting --wave-wait until {until}")
        return Decision(True, wave, "")

    def to_json(self) -> dict[str, Any]:
        waves = self.rollout.waves if self.rollout is not None else ("100%",)
        return {
            "name": self.name,
            "version": version_id(self.seq),
            "wave_wait": self.rollout.wave_wait if self.rollout is not None else 0.0,
            "halted": self.halted(),
            "waves": [
                {
                    "size": spec,
                    "servers": {
                        s.label: s.state
                        for s in self.candidates
                        if self.wave_of[s.server.node] == index
                    },
                }
                for index, spec in enumerate(waves)
            ],
        }

    def lines(self) -> list[str]:
        waves = self.rollout.waves if self.rollout is not None else ("100%",)
        targeted = len(self.candidates)
        out = [f"{self.name} version {version_id(self.seq)}: {targeted} targeted servers"]
        for index, spec in enumerate(waves):
            members = [
                f"{s.label} ({s.state})"
                for s in self.candidates
                if self.wave_of[s.server.node] == index
            ]
            out.append(f"  wave {index + 1} ({spec}): {', '.join(members) or '-'}")
        halted = self.halted()
        if halted is not None:
            out.append(f"  {halted}")
        return out


def _installed_at(server: ServerStatus, name: str) -> float:
    item = server.artifacts.get(name)
    return item.installed_at or 0.0 if item is not None else 0.0
