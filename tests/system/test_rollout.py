"""Issue 16 end to end on ``Storage = "Local"``: four real daemon processes in two groups.

``--to`` reaches only its group (the others say "not targeted"); ``--waves`` installs in
waves gated by the servers' own status records; a failing hook on the canary halts the
rollout; a server that goes silent stops counting after three StatusIntervals; an
operator's halt record stops a rollout and ``--continue`` lifts it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# tests/system is on sys.path (pytest's default "prepend" import mode, no __init__.py).
from distsync.rollout.plan import rank
from test_local_flow import Daemon, Site, make_file, sha256_file, wait_for

GROUPS = {
    "web-1-e8a": "frontends-e8a",
    "web-2-e8a": "frontends-e8a",
    "work-1-e8a": "backends-e8a",
    "work-2-e8a": "backends-e8a",
}
ARTIFACT = "rollapp-e8a.tar.gz"
STATUS_INTERVAL = 2  # small, with room for a loaded machine: silent servers drop out after 6 s


@dataclass
class Fleet:
    site: Site
    servers: dict[str, Site]
    daemons: dict[str, Daemon]
    fail_flag: Path  # while it exists, every server's OnUpdate hook fails

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = self.site.cli(args[0], "-c", str(self.site.upload_conf), *args[1:],
                             timeout=timeout)  # fmt: skip
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        )

    def upload(self, src: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
        proc = self.cli("upload", str(src), *args)
        match = re.search(r"\tversion (\d+)\t", proc.stdout)
        assert match, proc
        return proc, match[1]

    def status(self, *args: str) -> dict[str, Any]:
        proc = self.cli("status", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    def artifact(self, name: str) -> dict[str, Any] | None:
        """The status record's entry for ARTIFACT of the server ``name``."""
        for server in self.status()["servers"]:
            if server["name"] == name:
                return server["artifacts"].get(ARTIFACT)  # type: ignore[no-any-return]
        return None

    def having(self, sha256: str) -> set[str]:
        found = set()
        for name, server in self.servers.items():
            path = server.out / ARTIFACT
            if path.exists() and sha256_file(path) == sha256:
                found.add(name)
        return found


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    site = Site.create(tmp_path / "uploader")
    fail_flag = tmp_path / "hooks-fail"
    servers: dict[str, Site] = {}
    daemons: dict[str, Daemon] = {}
    try:
        for name, group in GROUPS.items():
            server = site.sibling(tmp_path / name)
            server.update_daemon_conf(
                NodeName=name,
                Groups=[group],
                StatusInterval=STATUS_INTERVAL,
                OnUpdate=["sh", "-c", f'test ! -e "{fail_flag}"'],
            )
            servers[name] = server
            daemons[name] = server.start_daemon()
        result = Fleet(site, servers, daemons, fail_flag)

        def reporting() -> bool:
            live = {s["name"] for s in result.status()["servers"] if s["state"] == "live"}
            return live == set(GROUPS)

        wait_for(reporting, "four servers to report", 60, 0.2)
        yield result
    finally:
        for server in servers.values():
            server.close()


def test_to_group_reaches_only_that_group(fleet: Fleet) -> None:
    src = make_file(fleet.site.root / ARTIFACT, os.urandom(100_000))
    done, version = fleet.upload(src, "--to", "frontends-e8a", "--wait", "--all",
                                 "--timeout", "90")  # fmt: skip
    assert done.returncode == 0, done.stderr
    # --all counted the two targeted servers only.
    assert f"{ARTIFACT} version {version}: 2 of 2 servers installed it" in done.stdout
    assert fleet.having(sha256_file(src)) == {"web-1-e8a", "web-2-e8a"}

    summary = wait_for(lambda: fleet.status(ARTIFACT)["artifacts"][0]["summary"],
                       "a summary")  # fmt: skip
    assert summary == f"2 of 2 servers have {ARTIFACT} version {version}", summary
    for name in ("work-1-e8a", "work-2-e8a"):
        wait_for(lambda n=name: (fleet.artifact(n) or {}).get("marks") == [], f"{name} unmarked")
        assert not (fleet.servers[name].out / ARTIFACT).exists()
    # No group name in plaintext anywhere in the bucket.
    for path in fleet.site.bucket.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"frontends-e8a" not in data and b"backends-e8a" not in data, path
    # A newer upload for the other group: the web servers keep what they have.
    src.write_bytes(os.urandom(1000))
    other, _ = fleet.upload(src, "--to", "backends-e8a", "--wait", "--all", "--timeout", "90")
    assert other.returncode == 0, other.stderr
    assert fleet.having(sha256_file(src)) == {"work-1-e8a", "work-2-e8a"}


def test_failing_canary_halts_the_rollout(fleet: Fleet) -> None:
    fleet.fail_flag.touch()
    src = make_file(fleet.site.root / ARTIFACT, os.urandom(50_000))
    halted, _version = fleet.upload(src, "--waves", "1,100%", "--wait", "--all",
                                   "--timeout", "90")  # fmt: skip
    assert halted.returncode == 6, halted
    (line,) = halted.stderr.strip().splitlines()
    assert "halted at wave 1: " in line and "failed: its OnUpdate hook failed" in line, line
    (canary,) = fleet.having(sha256_file(src))
    assert canary in line
    # The rest never install it: give them several polls and status intervals.
    time.sleep(4 * STATUS_INTERVAL)
    assert fleet.having(sha256_file(src)) == {canary}
    table = fleet.cli("status", ARTIFACT)
    assert f"halted at wave 1: {canary} failed: its OnUpdate hook failed" in table.stdout
    shown = fleet.cli("rollout", ARTIFACT, "--json")
    assert shown.returncode == 0, shown.stderr
    waves = json.loads(shown.stdout)["waves"]
    assert list(waves[0]["servers"]) == [canary] and len(waves[1]["servers"]) == 3

    # A newer upload supersedes the halted rollout.
    fleet.fail_flag.unlink()
    src.write_bytes(os.urandom(1000))
    fixed, _ = fleet.upload(src, "--waves", "1,100%", "--wait", "--all", "--timeout", "90")
    assert fixed.returncode == 0, fixed.stderr
    assert fleet.having(sha256_file(src)) == set(GROUPS)


def test_waves_install_in_order_each_after_the_previous_is_healthy(fleet: Fleet) -> None:
    src = make_file(fleet.site.root / ARTIFACT, os.urandom(50_000))
    wave_wait = 2
    done, _version = fleet.upload(src, "--waves", "1,50%,100%", "--wave-wait", str(wave_wait),
                                 "--wait", "--all", "--timeout", "120")  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(fleet.cli("rollout", ARTIFACT, "--json").stdout)
    members = [list(wave["servers"]) for wave in shown["waves"]]
    assert [len(m) for m in members] == [1, 1, 2], members
    installed_at = {
        s["name"]: s["artifacts"][ARTIFACT]["installed_at"] for s in fleet.status()["servers"]
    }
    for earlier, later in zip(members, members[1:]):
        ready = max(installed_at[name] for name in earlier) + wave_wait
        assert all(installed_at[name] >= ready for name in later), (members, installed_at)


def test_silent_server_stops_counting_after_three_status_intervals(fleet: Fleet) -> None:
    """The server that will be the canary freezes (no stopping record): while its record is
    live nobody installs; once it expires, the next in order is the canary and the rollout
    goes on without it."""
    servers = fleet.status()["servers"]
    # The first upload of a fresh bucket is version 1: its order is known beforehand.
    frozen = min(servers, key=lambda s: rank(s["node"], 1))["name"]
    os.kill(fleet.daemons[frozen].proc.pid, signal.SIGSTOP)
    try:
        last_seen = next(s for s in fleet.status()["servers"] if s["name"] == frozen)["last_seen"]
        src = make_file(fleet.site.root / ARTIFACT, os.urandom(50_000))
        done, version = fleet.upload(src, "--waves", "1,50%,100%", "--wait", "--all",
                                     "--timeout", "90")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert version == "1"
        assert fleet.having(sha256_file(src)) == set(GROUPS) - {frozen}
        installed_at = [
            s["artifacts"][ARTIFACT]["installed_at"]
            for s in fleet.status()["servers"]
            if s["name"] != frozen
        ]
        # Not before the frozen canary's record expired (its last write + 3 intervals).
        assert min(installed_at) >= last_seen + 3 * STATUS_INTERVAL, (installed_at, last_seen)
    finally:
        os.kill(fleet.daemons[frozen].proc.pid, signal.SIGCONT)


def test_operator_halt_and_continue(fleet: Fleet) -> None:
    # The fleet is frozen while the upload and the halt go in, so that no server sees the
    # version before its halt record.
    for daemon in fleet.daemons.values():
        os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        src = make_file(fleet.site.root / ARTIFACT, os.urandom(50_000))
        done, version = fleet.upload(src, "--waves", "1,100%")
        assert done.returncode == 0, done.stderr
        halt = fleet.cli("rollout", ARTIFACT, "--halt")
        assert halt.returncode == 0, halt.stderr
    finally:
        for daemon in fleet.daemons.values():
            os.kill(daemon.proc.pid, signal.SIGCONT)
    time.sleep(4 * STATUS_INTERVAL)
    assert fleet.having(sha256_file(src)) == set()
    shown = fleet.cli("rollout", ARTIFACT)
    assert f"{ARTIFACT} version {version}: 4 targeted servers" in shown.stdout, shown
    assert "halted by " in shown.stdout, shown
    lifted = fleet.cli("rollout", ARTIFACT, "--continue")
    assert lifted.returncode == 0, lifted.stderr
    wait_for(lambda: fleet.having(sha256_file(src)) == set(GROUPS), "every server", 60, 0.2)


def test_releases_follow_targets_and_waves(tmp_path: Path) -> None:
    """[[Release]] names: --to reaches only its group, and a canary whose HealthCheck fails
    (switched back) halts the rollout for the other servers."""
    from test_releases import Releases

    site = Site.create(tmp_path / "uploader")
    groups = {"rel-web-1": "web-rel", "rel-web-2": "web-rel", "rel-batch-1": "batch-rel"}
    servers: dict[str, Releases] = {}
    try:
        for name, group in groups.items():
            server = site.sibling(tmp_path / name)
            server.update_daemon_conf(NodeName=name, Groups=[group],
                                      StatusInterval=STATUS_INTERVAL)  # fmt: skip
            servers[name] = Releases(server, HealthTimeout=1.0)
            server.start_daemon()
        uploader = Releases(site)

        def upload(number: int, healthy: bool, *args: str) -> subprocess.CompletedProcess[bytes]:
            from test_releases import app_tarball

            tarball = app_tarball(uploader.builds / f"app-{number}.tar.gz", f"v{number}", healthy)
            return site.cli("upload", "-c", str(site.upload_conf), str(tarball), *args)

        def live() -> bool:
            proc = site.cli("status", "-c", str(site.upload_conf), "--json")
            found = {s["name"] for s in json.loads(proc.stdout)["servers"] if s["state"] == "live"}
            return found == set(groups)

        wait_for(live, "three servers to report", 60, 0.2)
        first = upload(1, True, "--to", "web-rel", "--wait", "--all", "--timeout", "90")
        assert first.returncode == 0, first.stderr
        assert b": 2 of 2 servers installed it" in first.stdout
        assert [servers[n].current_version() for n in groups] == ["1", "1", None]

        second = upload(2, False, "--to", "web-rel", "--waves", "1,100%", "--wait", "--all",
                        "--timeout", "90")  # fmt: skip
        assert second.returncode == 6, second
        line = second.stderr.decode()
        assert "halted at wave 1: rel-web-" in line and "HealthCheck exited 1" in line, line
        canary = re.search(r"halted at wave 1: (rel-web-\d)", line)[1]  # type: ignore[index]
        other = ({"rel-web-1", "rel-web-2"} - {canary}).pop()
        time.sleep(4 * STATUS_INTERVAL)
        # The canary switched back; the other web server never fetched version 2.
        assert servers[canary].current_version() == "1"
        assert servers[other].current_version() == "1"
        assert all("2-app" not in kept for kept in servers[other].kept())
        assert servers["rel-batch-1"].current_version() is None
    finally:
        for server in servers.values():
            server.site.close()
