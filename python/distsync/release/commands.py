"""``distsync releases``, ``rollback`` and ``resume``: read a release's directory, or hand a
request to the daemon that manages it and wait for its answer (distsync.release.requests)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from distsync.config import Config
from distsync.errors import DistsyncError, UsageError
from distsync.release import requests
from distsync.release.config import ReleaseSpec
from distsync.release.layout import ReleaseLayout
from distsync.release.report import describe

__all__ = ["RequestFailed", "format_releases", "select", "send_request"]


class RequestFailed(DistsyncError):
    """The daemon applied the request, but the release it switched to failed its checks,
    or it did not answer in time."""

    exit_code = 1


def select(cfg: Config, name: str | None) -> list[ReleaseSpec]:
    """The [[Release]]s ``name`` designates: its Match, its Dir, or an artifact name it takes."""
    if not cfg.releases:
        raise UsageError(f"{cfg.path} has no [[Release]] table")
    if name is None:
        return list(cfg.releases)
    found = [s for s in cfg.releases if name in (s.match, str(s.dir)) or s.claims(name)]
    if not found:
        patterns = ", ".join(s.match for s in cfg.releases)
        raise UsageError(f"no [[Release]] in {cfg.path} takes {name!r} (Match: {patterns})")
    return found[:1]


def send_request(
    cfg: Config,
    name: str,
    action: str,
    to: int | None,
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Queue the request and wait for the daemon's answer; returns the release as data."""
    spec = select(cfg, name)[0]
    layout = ReleaseLayout(spec.dir)
    request = requests.submit(layout, action, to)
    if not requests.daemon_running(layout):
        say(
            f"no distsync daemon is running for {spec.dir}: the {action} is queued and "
            "applied when the daemon starts"
        )
        return describe(spec, cfg.pins)
    started = time.monotonic()
    answer = requests.wait_answer(layout, request, timeout)
    if answer is None:
        raise RequestFailed(
            f"the daemon did not answer within {timeout:g} s (it may be busy with an install); "
            f"the {action} stays queued and is applied after it"
        )
    if not answer.get("ok"):
        message = str(answer.get("message", "refused"))
        if answer.get("refused", True):
            raise UsageError(message)
        raise RequestFailed(message)
    say(f"{spec.match}: {answer.get('message')} (after {time.monotonic() - started:.1f} s)")
    release: dict[str, Any] = answer.get("release") or describe(spec, cfg.pins)
    return release


def format_releases(rows: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return json.dumps(rows, indent=2)
    lines: list[str] = []
    for row in rows:
        status = [f"current {row['current']}" if row["current"] else "no current release"]
        if row["held"]:
            status.append(f"held at {row['held']} ({row['held_by']})")
        if row["activating"]:
            status.append(f"activating {row['activating']}")
        lines.append(f"{row['release']}  {row['dir']}  " + ", ".join(status))
        if not row["releases"]:
            lines.append("  (no releases yet)")
            continue
        width = max(8, *(len(item["version"]) for item in row["releases"]))
        lines.append(f"  {'VERSION':>{width}}  {'NAME':<32}  STATE")
        for item in row["releases"]:
            state = []
            if item["current"]:
                state.append("current")
            elif item["kept"]:
                state.append("kept")
            if item["failed"]:
                state.append(f"failed: {item['reason']}")
            lines.append(f"  {item['version']:>{width}}  {item['name']:<32}  {', '.join(state)}")
    return "\n".join(lines)
