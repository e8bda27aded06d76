"""A distsync setup on the test Swift, made by the real ``distsync setup --storage swift``.

``SwiftFleet`` runs setup as the admin (``ST_USER``/``ST_KEY`` in the environment, as the
``swift`` client reads them) with the read-only second user for the daemons, then gives the
daemon config a StateDir and a fast poll. Its ``run`` drives the CLI as separate processes;
``run_measured`` also returns the process's peak resident memory (``wait4``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w
import tomllib
from swiftserver import ADMIN, READER, SwiftServer, SwiftUser


def setup_env(admin: SwiftUser = ADMIN, daemon: SwiftUser | None = READER) -> dict[str, str]:
    env = {"ST_USER": admin.name, "ST_KEY": admin.key}
    if daemon is not None:
        env["DISTSYNC_SWIFT_DAEMON_KEY"] = daemon.key
    return env


class SwiftFleet:
    def __init__(self, server: SwiftServer, container: str, tmp: Path) -> None:
        self.server = server
        self.container = container
        self.tmp = tmp
        self.uploader = tmp / "up.toml"
        self.daemon = tmp / "d.toml"
        self.installed = tmp / "installed"
        self.home = tmp / "home"

    def setup_args(self, *extra: str) -> list[str]:
        return [
            "setup",
            "--storage",
            "swift",
            "--non-interactive",
            "--auth-url",
            self.server.auth_url,
            "--bucket",
            self.container,
            "--upload-config",
            str(self.uploader),
            "--daemon-config",
            str(self.daemon),
            "--output-dir",
            str(self.installed),
            *extra,
        ]

    def setup(self, *, daemon: SwiftUser | None = READER) -> subprocess.CompletedProcess[bytes]:
        extra = ("--daemon-user", daemon.name) if daemon is not None else ()
        result = self.run(*self.setup_args(*extra), env=setup_env(daemon=daemon))
        if result.returncode == 0:
            self.tune_daemon(StateDir=str(self.tmp / "state"), PollInterval=0.2, PollJitter=0)
        return result

    def tune_daemon(self, **values: Any) -> None:
        """Add top-level keys to the daemon config (TOML tables must stay last)."""
        data = tomllib.loads(self.daemon.read_text())
        data.update(values)
        self.daemon.write_text(tomli_w.dumps(data))

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ, HOME=str(self.home))
        for name in list(env):
            if name.startswith(("ST_", "OS_", "DISTSYNC_SWIFT")):
                del env[name]
        env.update(extra or {})
        return env

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "distsync", *args],
            capture_output=True,
            timeout=timeout,
            env=self.env(env),
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    def run_measured(self, *args: str) -> tuple[int, str, int]:
        """Run the CLI; (exit status, stderr, peak RSS in bytes) of that one process."""
        out = self.tmp / "measured.out"
        err = self.tmp / "measured.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "distsync", *args],
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=self.env(),
            )
        try:
            _pid, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
        except BaseException:  # e.g. pytest-timeout: do not leave the process running
            process.kill()
            process.wait(30)
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        return process.returncode, err.read_text(errors="replace"), usage.ru_maxrss * 1024

    def upload(self, path: Path, *, name: str | None = None) -> str:
        extra = ("--name", name) if name else ()
        return self.ok("upload", "-c", str(self.uploader), *extra, str(path))

    def daemon_once(self) -> subprocess.CompletedProcess[bytes]:
        return self.run("daemon", "--once", "-c", str(self.daemon))


def artifact(tmp: Path, name: str, size: int) -> Path:
    path = tmp / "src" / name
    path.parent.mkdir(exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            handle.write(block)
            left -= len(block)
    return path
