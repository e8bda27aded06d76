"""Status records: what each server reports about itself, sealed in the bucket.

Each daemon rewrites one record at ``{prefix}status/<node id>`` after every cycle that changed
something, and otherwise every ``StatusInterval`` seconds. Stored bytes::

    b"DST3" || AEAD_AES_128_CBC_HMAC_SHA_256(JSON body)   (distsync.sealed, "v3 status")

bound to its own key, so a record cannot be moved to another server's key, and holding the
server's name, groups and artifact names only inside the encryption. ``expires`` (the
writer's clock: ``written_at + 3 x interval``) says until when a reader may count the server
as live; a daemon that stops writes a last record with ``stopped`` set.

The body (``to_body``/``from_body``; docs/status.md)::

    {"v": 1, "node": id, "name": NodeName, "groups": [...], "daemon": version,
     "written_at": t, "expires": t, "interval": s, "started_at": t, "stopped": bool,
     "last_poll": t | null, "bytes": {"store": n, "peers": n}, "pins": {name: "41"},
     "artifacts": {name: {"version": 42 | null, "sha256": hex | null, "installed_at": t | null,
                          "newest": 42 | null, "hook": "ok" | "failed" | null,
                          "failure": {"version": 43, "reason": "...", "at": t,
                                      "final": bool} | null,
                          "skipped": 43 (only when set: not targeted)}}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from distsync.errors import FormatError
from distsync.node import is_node_id
from distsync.sealed import RecordKind, open_sealed, seal_record_body

__all__ = [
    "STATUS_DIR",
    "STATUS_RECORD",
    "ArtifactStatus",
    "Failure",
    "ServerStatus",
    "open_status",
    "seal_status",
]

STATUS_RECORD = RecordKind(
    magic=b"DST3",
    purpose="v3 status",
    label=b"distsync v3 status",
    noun="status record",
    max_size=256 << 10,
)
STATUS_DIR = "status/"
FORMAT_VERSION = 1
MAX_REASON = 300  # characters of a failure's reason kept in the record
HOOK_STATES = ("ok", "failed")
LIVE_INTERVALS = 3  # a record counts as live for this many of its writer's intervals


@dataclass(frozen=True)
class Failure:
    """The last failure to install a name: ``final`` when the version was rejected for good
    (it failed verification), else it is retried on the next poll."""

    version: int
    reason: str
    at: float
    final: bool


@dataclass(frozen=True)
class ArtifactStatus:
    version: int | None = None  # installed; None: never installed here
    sha256: str | None = None
    installed_at: float | None = None
    newest: int | None = None  # the newest version of the name this server saw in the log
    hook: str | None = None  # OnUpdate after the install: "ok", "failed", None (none/unknown)
    failure: Failure | None = None
    # The newest version of the name this server saw that is not for it (``to`` names none
    # of its groups, or its ``Names`` leave the name out): "not targeted", not failed.
    skipped: int | None = None


@dataclass(frozen=True)
class ServerStatus:
    node: str
    name: str
    written_at: float
    expires: float
    interval: float
    started_at: float
    groups: tuple[str, ...] = ()
    daemon: str = ""
    stopped: bool = False
    last_poll: float | None = None
    bytes_store: int = 0
    bytes_peers: int = 0
    pins: Mapping[str, str] = field(default_factory=dict)
    artifacts: Mapping[str, ArtifactStatus] = field(default_factory=dict)

    def live(self, now: float) -> bool:
        """Running, and heard from recently enough (its own interval, not the reader's)."""
        return not self.stopped and now <= self.expires

    def stable(self) -> ServerStatus:
        """The record without what changes on every write or poll: equal stable parts mean
        nothing worth an immediate write happened."""
        return replace(self, written_at=0.0, expires=0.0, last_poll=None, bytes_store=0,
                       bytes_peers=0)  # fmt: skip

    def to_body(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "node": self.node,
            "name": self.name,
            "groups": list(self.groups),
            "daemon": self.daemon,
            "written_at": self.written_at,
            "expires": self.expires,
            "interval": self.interval,
            "started_at": self.started_at,
            "stopped": self.stopped,
            "last_poll": self.last_poll,
            "bytes": {"store": self.bytes_store, "peers": self.bytes_peers},
            "pins": dict(self.pins),
            "artifacts": {name: _artifact_body(a) for name, a in sorted(self.artifacts.items())},
        }

    @classmethod
    def from_body(cls, raw: Mapping[str, Any]) -> ServerStatus:
        """Parse an authenticated body; ValueError/TypeError/KeyError when malformed."""
        if raw["v"] != FORMAT_VERSION:
            raise ValueError("unknown status record version")
        node = _str(raw["node"])
        if not is_node_id(node):
            raise ValueError("bad node id")
        sizes = raw["bytes"]
        return cls(
            node=node,
            name=_str(raw["name"]),
            groups=tuple(_str(group) for group in _list(raw["groups"])),
            daemon=_str(raw["daemon"]),
            written_at=_time(raw["written_at"]),
            expires=_time(raw["expires"]),
            interval=_time(raw["interval"]),
            started_at=_time(raw["started_at"]),
            stopped=_bool(raw["stopped"]),
            last_poll=_opt(_time, raw["last_poll"]),
            bytes_store=_int(sizes["store"]),
            bytes_peers=_int(sizes["peers"]),
            pins={_str(name): _str(pin) for name, pin in _dict(raw["pins"]).items()},
            artifacts={
                _str(name): _artifact(item) for name, item in _dict(raw["artifacts"]).items()
            },
        )


def seal_status(secret: bytes, key: str, status: ServerStatus) -> bytes:
    return seal_record_body(STATUS_RECORD, secret, key, status.to_body())


def open_status(secret: bytes, key: str, data: bytes) -> ServerStatus:
    """Verify and parse the record at ``key``: IntegrityError if it is not genuine,
    FormatError if it is genuine but malformed or names another node."""
    raw = open_sealed(STATUS_RECORD, secret, key, data)
    try:
        status = ServerStatus.from_body(raw)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise FormatError(f"{key}: authenticated status record is malformed") from None
    if not key.endswith("/" + status.node):
        raise FormatError(f"{key}: status record names another node")
    return status


def _artifact_body(item: ArtifactStatus) -> dict[str, Any]:
    failure = item.failure
    # "skipped" only when set, so records of untargeted fleets stay as they were.
    extra = {} if item.skipped is None else {"skipped": item.skipped}
    return {
        **extra,
        "version": item.version,
        "sha256": item.sha256,
        "installed_at": item.installed_at,
        "newest": item.newest,
        "hook": item.hook,
        "failure": None
        if failure is None
        else {
            "version": failure.version,
            "reason": failure.reason[:MAX_REASON],
            "at": failure.at,
            "final": failure.final,
        },
    }


def _artifact(raw: Any) -> ArtifactStatus:
    item = _dict(raw)
    hook = _opt(_str, item["hook"])
    if hook is not None and hook not in HOOK_STATES:
        raise ValueError("bad hook state")
    failure = _opt(_dict, item["failure"])
    return ArtifactStatus(
        version=_opt(_int, item["version"]),
        sha256=_opt(_str, item["sha256"]),
        installed_at=_opt(_time, item["installed_at"]),
        newest=_opt(_int, item["newest"]),
        skipped=_opt(_int, item.get("skipped")),
        hook=hook,
        failure=None
        if failure is None
        else Failure(
            _int(failure["version"]),
            _str(failure["reason"]),
            _time(failure["at"]),
            _bool(failure["final"]),
        ),
    )


def _opt(parse: Any, value: Any) -> Any:
    return None if value is None else parse(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected a boolean")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("expected a non-negative integer")
    return value


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise TypeError("expected a non-negative number")
    return float(value)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return value
