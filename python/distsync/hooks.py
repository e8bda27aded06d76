"""Commands the daemon runs: the on-update hook and the release hooks, without a shell.

``run_command`` is the one runner: the command gets its own session (so a timeout or a stop
request ends it with everything it started: SIGTERM, then SIGKILL, as systemd would), its
output goes to a temp file (a hook that leaves a background process holding its output cannot
hang the daemon), and the outcome comes back as data, with the last lines of output for the
log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from distsync.manifest import Version

__all__ = ["CommandResult", "run_command", "run_hook"]

log = logging.getLogger(__name__)

_TAIL_LINES = 3
_POLL = 0.1
_TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    reason: str = ""  # when not ok: "exited 1", "timed out after 5 s", "could not start: ..."
    output: str = ""  # the last lines of a failed command's output, joined by " | "
    interrupted: bool = False  # a stop request ended it

    def describe(self) -> str:
        return self.reason + (f": {self.output}" if self.output else "")


def run_command(
    argv: tuple[str, ...],
    *,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> CommandResult:
    """Run ``argv`` (no shell) with ``env`` added to the daemon's environment."""
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                list(argv),
                env=dict(os.environ, **env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return CommandResult(False, f"could not start: {(exc.strerror or str(exc)).lower()}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                code = proc.wait(_POLL)
                break
            except subprocess.TimeoutExpired:
                if should_stop():
                    _kill(proc)
                    return CommandResult(False, "stopped", interrupted=True)
                if time.monotonic() >= deadline:
                    _kill(proc)
                    return CommandResult(False, f"timed out after {timeout:g} s")
        if code == 0:
            return CommandResult(True)
        output.seek(max(0, output.seek(0, os.SEEK_END) - 4096))
        tail = output.read().decode("utf-8", "replace").strip().splitlines()
        return CommandResult(False, f"exited {code}", " | ".join(tail[-_TAIL_LINES:]))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """End the command and everything in its session: SIGTERM, then SIGKILL after a grace."""
    for sig, grace in ((signal.SIGTERM, _TERM_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_hook(
    argv: tuple[str, ...],
    path: Path,
    version: Version,
    timeout: float,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Run the OnUpdate hook; log (never raise) a failure. True when it exited 0.

    A stop request ends it (SIGTERM, then SIGKILL): the daemon stops within seconds.
    """
    result = run_command(
        argv,
        env={
            "DISTSYNC_PATH": str(path),
            "DISTSYNC_NAME": version.manifest.name,
            "DISTSYNC_VERSION": version.version_id,
            "DISTSYNC_SHA256": version.manifest.sha256,
        },
        timeout=timeout,
        should_stop=should_stop,
    )
    if result.ok:
        log.info("OnUpdate hook %s ran for %s", argv[0], path.name)
    elif result.interrupted:
        log.warning("OnUpdate hook %s ended: the daemon is stopping", argv[0])
    else:
        log.error(
            "OnUpdate hook %s %s for %s%s",
            argv[0],
            result.reason,
            path.name,
            f": {result.output}" if result.output else "",
        )
    return result.ok
