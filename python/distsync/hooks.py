"""The on-update hook: a command run after each install, without a shell."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from distsync.manifest import Version

__all__ = ["run_hook"]

log = logging.getLogger(__name__)

_LOOK_EVERY = 0.2  # seconds between looks at a stop request while the hook runs
_TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def run_hook(
    argv: tuple[str, ...],
    path: Path,
    version: Version,
    timeout: float,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Run the hook; log (never raise) a failure. True when it exited 0.

    A stop request ends it as systemd would (SIGTERM, then SIGKILL): the daemon stops within
    seconds, and the hook's unit-mates are not left behind.
    """
    env = dict(
        os.environ,
        DISTSYNC_PATH=str(path),
        DISTSYNC_NAME=version.manifest.name,
        DISTSYNC_VERSION=version.version_id,
        DISTSYNC_SHA256=version.manifest.sha256,
    )
    try:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        log.error("OnUpdate hook %s could not start: %s", argv[0], exc.strerror or exc)
        return False
    deadline = time.monotonic() + timeout
    with proc:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=_LOOK_EVERY)
                break
            except subprocess.TimeoutExpired:
                pass
            late = time.monotonic() >= deadline
            if late or should_stop():
                _end(proc)
                if late:
                    log.error(
                        "OnUpdate hook %s timed out after %g s for %s", argv[0], timeout, path.name
                    )
                else:
                    log.warning("OnUpdate hook %s ended: the daemon is stopping", argv[0])
                return False
    if proc.returncode != 0:
        tail = (stderr or stdout).decode("utf-8", "replace").strip().splitlines()[-3:]
        log.error(
            "OnUpdate hook %s exited %d for %s%s",
            argv[0],
            proc.returncode,
            path.name,
            (": " + " | ".join(tail)) if tail else "",
        )
        return False
    log.info("OnUpdate hook %s ran for %s", argv[0], path.name)
    return True


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=_TERM_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
