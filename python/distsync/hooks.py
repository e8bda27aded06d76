"""The on-update hook: a command run after each install, without a shell."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from distsync.manifest import Version

__all__ = ["run_hook"]

log = logging.getLogger(__name__)


def run_hook(argv: tuple[str, ...], path: Path, version: Version, timeout: float) -> bool:
    """Run the hook; log (never raise) a failure. True when it exited 0."""
    env = dict(
        os.environ,
        DISTSYNC_PATH=str(path),
        DISTSYNC_NAME=version.manifest.name,
        DISTSYNC_VERSION=version.version_id,
        DISTSYNC_SHA256=version.manifest.sha256,
    )
    try:
        done = subprocess.run(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.error("OnUpdate hook %s timed out after %g s for %s", argv[0], timeout, path.name)
        return False
    except OSError as exc:
        log.error("OnUpdate hook %s could not start: %s", argv[0], exc.strerror or exc)
        return False
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()[-3:]
        log.error(
            "OnUpdate hook %s exited %d for %s%s",
            argv[0],
            done.returncode,
            path.name,
            (": " + " | ".join(tail)) if tail else "",
        )
        return False
    log.info("OnUpdate hook %s ran for %s", argv[0], path.name)
    return True
