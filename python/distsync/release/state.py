"""What the daemon remembers about one release, in ``Dir/.distsync/state.json``.

The file system says which releases exist and which is current; this file adds what it
cannot: versions known from the log, failed versions and why, a hold, an activation in
progress (so that a crash during a health check is resumed, not forgotten), and the outcome
of the last activation — the data a fleet status record reports.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distsync.errors import LocalIOError
from distsync.fsutil import atomic_output, local_io_error

__all__ = ["Activation", "ActivationOutcome", "Failure", "ReleaseState", "load_state", "save_state"]

# Log versions remembered per release (the newest ones); older ones are long superseded.
_KNOWN_LIMIT = 200


@dataclass(frozen=True)
class Failure:
    name: str
    reason: str
    at: float


@dataclass(frozen=True)
class Activation:
    """A switch under way: ``current`` may already point at ``version``."""

    version: int
    name: str
    previous: int | None
    previous_name: str | None


@dataclass(frozen=True)
class ActivationOutcome:
    """How one activation ended: what the daemon logs and a status record carries."""

    release: str  # the [[Release]]'s Match
    dir: str
    name: str
    version: str
    sha256: str
    healthy: bool
    reason: str | None
    at: float
    current: str | None  # the version current points at afterwards

    def facts(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReleaseState:
    known: dict[int, str] = field(default_factory=dict)  # version -> artifact name
    sha256: dict[int, str] = field(default_factory=dict)
    failed: dict[int, Failure] = field(default_factory=dict)
    hold: int | None = None
    activating: Activation | None = None
    scanned: bool = False  # the whole log has been read once for this release
    last: ActivationOutcome | None = None

    def note(self, version: int, name: str, sha256: str) -> None:
        self.known[version] = name
        self.sha256[version] = sha256
        for old in sorted(self.known)[:-_KNOWN_LIMIT]:
            del self.known[old]
            self.sha256.pop(old, None)

    def to_json(self) -> dict[str, Any]:
        return {
            "known": {str(v): n for v, n in sorted(self.known.items())},
            "sha256": {str(v): s for v, s in sorted(self.sha256.items())},
            "failed": {str(v): asdict(f) for v, f in sorted(self.failed.items())},
            "hold": self.hold,
            "activating": asdict(self.activating) if self.activating else None,
            "scanned": self.scanned,
            "last": self.last.facts() if self.last else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ReleaseState:
        return cls(
            known={int(v): str(n) for v, n in raw.get("known", {}).items()},
            sha256={int(v): str(s) for v, s in raw.get("sha256", {}).items()},
            failed={int(v): Failure(**f) for v, f in raw.get("failed", {}).items()},
            hold=None if raw.get("hold") is None else int(raw["hold"]),
            activating=Activation(**raw["activating"]) if raw.get("activating") else None,
            scanned=bool(raw.get("scanned", False)),
            last=ActivationOutcome(**raw["last"]) if raw.get("last") else None,
        )


def load_state(path: Path) -> ReleaseState:
    try:
        return ReleaseState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return ReleaseState()
    except OSError as exc:
        raise local_io_error("read", path, exc) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise LocalIOError(
            f"{path} is not a distsync release state file (move it away to start afresh)"
        ) from None


def save_state(path: Path, state: ReleaseState) -> None:
    body = json.dumps(state.to_json(), indent=1, sort_keys=True).encode()
    # Readable by the operator's `distsync releases`; it holds no secret.
    with atomic_output(path, mode=0o644) as out:
        out.write(body)
