"""Operator requests (`distsync rollback` / `resume`) handed to the daemon that manages a
release, so that one process — the daemon, with its own identity and sandbox — ever switches
``current``.

The command writes ``Dir/.distsync/requests/<id>.json`` atomically (mode 0644); the daemon
applies pending requests at the start of every cycle (so within a poll interval), writes the
answer to ``<id>.done`` and deletes the request. The command waits for the answer. Whether a
daemon runs is told by its lock on ``Dir/.distsync/lock``; with none running, a request
waits in the queue for the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distsync.errors import LocalIOError, UsageError
from distsync.fsutil import atomic_output, local_io_error
from distsync.release.layout import ReleaseLayout

__all__ = ["Request", "answer", "daemon_running", "pending", "submit", "wait_answer"]

ACTIONS = ("rollback", "resume")
# Answers nobody collected are removed after this long.
_ANSWER_TTL = 3600.0


@dataclass(frozen=True)
class Request:
    id: str
    action: str
    to: int | None
    at: float


def submit(layout: ReleaseLayout, action: str, to: int | None = None) -> Request:
    if not layout.requests.is_dir():
        raise UsageError(
            f"no distsync daemon has managed {layout.root} yet (start it once with this config)"
        )
    request = Request(f"{time.time_ns():020d}-{secrets.token_hex(4)}", action, to, time.time())
    body = json.dumps({"action": action, "to": to, "at": request.at}).encode()
    with atomic_output(layout.requests / f"{request.id}.json", mode=0o644) as out:
        out.write(body)
    return request


def pending(layout: ReleaseLayout) -> list[Request | tuple[str, str]]:
    """Requests in the order they were made; an unreadable one as (id, problem)."""
    found: list[Request | tuple[str, str]] = []
    try:
        entries = sorted(layout.requests.glob("[0-9]*.json"))
    except OSError:
        return found
    for path in entries:
        request_id = path.name[: -len(".json")]
        try:
            raw = json.loads(path.read_text())
            action, to = raw["action"], raw.get("to")
            if action not in ACTIONS or not (to is None or (isinstance(to, int) and to > 0)):
                raise ValueError(action)
            found.append(Request(request_id, action, to, float(raw.get("at", 0))))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            found.append((request_id, "not a valid request"))
    return found


def answer(layout: ReleaseLayout, request_id: str, result: dict[str, Any]) -> None:
    """Record the outcome for the waiting command, then retire the request."""
    with atomic_output(layout.requests / f"{request_id}.done", mode=0o644) as out:
        out.write(json.dumps(result).encode())
    with contextlib.suppress(FileNotFoundError):
        (layout.requests / f"{request_id}.json").unlink()
    now = time.time()
    for old in layout.requests.glob("*.done"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > _ANSWER_TTL:
                old.unlink()


def wait_answer(
    layout: ReleaseLayout,
    request: Request,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    done = layout.requests / f"{request.id}.done"
    deadline = time.monotonic() + timeout
    while True:
        try:
            result: dict[str, Any] = json.loads(done.read_text())
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return None
            sleep(0.1)
            continue
        except (OSError, ValueError) as exc:
            raise LocalIOError(f"cannot read the daemon's answer {done}: {exc}") from None
        with contextlib.suppress(OSError):
            done.unlink()
        return result


def daemon_running(layout: ReleaseLayout) -> bool:
    """Whether some daemon holds the release's lock (it takes it exclusively while it runs)."""
    try:
        fd = os.open(layout.lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise local_io_error("open", layout.lock_path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
