"""A store set up by the real ``distsync setup``, with ``distsync daemon`` processes following it
and ``distsync upload`` processes racing into it: what tests/system/test_log_races.py drives
on every store the tests run.

``Site`` holds the uploader's config, the environment the CLI needs for that store, and runs
daemons, each with a copy of setup's daemon config pointing at its own OutputDir, StateDir and
HOME, polling fast. Everything it starts is stopped (SIGTERM, then SIGKILL) by ``close``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import tomllib
from distsync.config import load_config
from distsync.layout import Layout
from distsync.storage import open_store
from distsync.store_record import StoreRecord, read_store_record

__all__ = ["Site", "Upload"]


@dataclass(frozen=True)
class Upload:
    """One ``distsync upload`` line: the name and the version id it printed."""

    name: str
    version: str


@dataclass
class Site:
    name: str
    tmp: Path
    uploader: Path
    daemon_template: Path
    env: dict[str, str] = field(default_factory=dict)
    daemons: list[tuple[Path, subprocess.Popen[bytes]]] = field(default_factory=list)

    def environment(self, home: Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "ST_", "OS_", "DISTSYNC_SWIFT"))
        }
        env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true", **self.env)
        return env

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
        home = self.tmp / "cli-home"
        home.mkdir(exist_ok=True)
        return subprocess.run(
            [sys.executable, "-m", "distsync", *args],
            capture_output=True,
            timeout=timeout,
            env=self.environment(home),
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def record(self) -> StoreRecord | None:
        """The store record setup wrote, opened with the uploader's secret."""
        cfg = load_config(self.uploader)
        return read_store_record(open_store(cfg), Layout(cfg.prefix), cfg.secret)

    # -- daemons --------------------------------------------------------------------------

    def daemon_config(self, index: int, **keys: Any) -> Path:
        """A copy of setup's daemon config with an OutputDir, StateDir and HOME of its own
        (under ``daemon-<index>``), polling fast, plus ``keys``."""
        home = self.tmp / f"daemon-{index}"
        home.mkdir()
        data: dict[str, Any] = tomllib.loads(self.daemon_template.read_text())
        data.update(
            OutputDir=str(home / "out"),
            StateDir=str(home / "state"),
            PollInterval=0.2,
            PollJitter=0.1,
            **keys,
        )
        tables = {k: data.pop(k) for k in list(data) if isinstance(data[k], dict)}
        config = home / "daemon.toml"
        config.write_text(tomli_w.dumps({**data, **tables}))
        config.chmod(0o600)
        return config

    def start_daemon(self, index: int, **keys: Any) -> Path:
        """A ``distsync daemon`` of its own; returns its OutputDir."""
        config = self.daemon_config(index, **keys)
        home = config.parent
        log = open(home / "daemon.log", "wb")  # noqa: SIM115 - the process owns it
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "distsync", "daemon", "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(home),
            )
        finally:
            log.close()
        self.daemons.append((home, process))
        return home / "out"

    def daemon_logs(self) -> str:
        return "\n".join(
            f"== {home.name}\n" + (home / "daemon.log").read_text(errors="replace")[-4000:]
            for home, _process in self.daemons
        )

    def wait_installed(self, expected: dict[str, bytes], timeout: float) -> None:
        """Until every daemon holds exactly ``expected`` (name -> content) in its OutputDir."""
        deadline = time.monotonic() + timeout
        while True:
            missing = []
            for home, process in self.daemons:
                assert process.poll() is None, f"a daemon exited:\n{self.daemon_logs()}"
                out = home / "out"
                for name, content in expected.items():
                    path = out / name
                    if not path.is_file() or path.read_bytes() != content:
                        missing.append(f"{home.name}/{name}")
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: after {timeout:.0f} s, not installed as expected: "
                    f"{missing[:8]} ({len(missing)} in all)\n{self.daemon_logs()}"
                )
            time.sleep(0.2)

    def close(self) -> None:
        for _home, process in self.daemons:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _home, process in self.daemons:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(15)

    # -- racing uploads -------------------------------------------------------------------

    def race(self, batches: list[list[Path]]) -> list[list[Upload]]:
        """One ``distsync upload FILES...`` process per batch, all started at once; what each
        printed. Every process must succeed."""
        home = self.tmp / "cli-home"
        home.mkdir(exist_ok=True)
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distsync",
                    "upload",
                    "-c",
                    str(self.uploader),
                    *map(str, files),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=self.environment(home),
            )
            for files in batches
        ]
        printed: list[list[Upload]] = []
        for process in processes:
            try:
                out, err = process.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                for other in processes:
                    other.kill()
                raise
            assert process.returncode == 0, f"{self.name}: upload failed: {err.decode()}"
            assert b"Traceback" not in err, err.decode()
            lines = [line.split("\t") for line in out.decode().splitlines()]
            printed.append([Upload(f[0], f[1].removeprefix("version ")) for f in lines])
        return printed
