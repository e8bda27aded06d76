"""Issue 14 end to end on ``Storage = "Local"``: three real daemon processes with their own
NodeNames report status; ``upload --wait`` gates on them, ``status`` shows them, metrics are
scraped over HTTP and read from a node_exporter textfile, and nothing in the bucket names a
server or an artifact in plaintext.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# tests/system is on sys.path (pytest's default "prepend" import mode, no __init__.py).
from test_local_flow import Daemon, Site, make_file, sha256_file, wait_for

NAMES = ("srv-alpha-7c1", "srv-bravo-7c1", "srv-charlie-7c1")
GROUPS = {"srv-alpha-7c1": ["web-eu-canary"], "srv-bravo-7c1": ["web-eu-bulk"]}
ARTIFACT = "fleetapp-4d2.tar.gz"
STATUS_INTERVAL = 2


@dataclass
class Fleet:
    site: Site  # the uploader's view and the bucket
    servers: dict[str, Site]
    daemons: dict[str, Daemon]

    def status(self, *args: str) -> dict[str, Any]:
        proc = self.site.cli("status", "-c", str(self.site.upload_conf), "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    def upload(
        self, path: Path, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = self.site.cli("upload", "-c", str(self.site.upload_conf), str(path), *args,
                             timeout=timeout)  # fmt: skip
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        )

    def reporting(self) -> set[str]:
        return {server["name"] for server in self.status()["servers"] if server["state"] == "live"}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    site = Site.create(tmp_path / "uploader")
    servers: dict[str, Site] = {}
    daemons: dict[str, Daemon] = {}
    try:
        for name in NAMES:
            server = site.sibling(tmp_path / name)
            extra: dict[str, Any] = {"NodeName": name, "StatusInterval": STATUS_INTERVAL}
            if name in GROUPS:
                extra["Groups"] = GROUPS[name]
            if name == NAMES[0]:
                extra["MetricsAddress"] = "127.0.0.1:0"  # the port is in its log
            if name == NAMES[1]:
                extra["MetricsTextfile"] = str(tmp_path / name / "distsync.prom")
            server.update_daemon_conf(**extra)
            servers[name] = server
            daemons[name] = server.start_daemon()
        result = Fleet(site, servers, daemons)
        wait_for(lambda: result.reporting() == set(NAMES), "three servers to report", 60, 0.2)
        yield result
    finally:
        for server in servers.values():
            server.close()


def test_wait_status_failures_and_metrics_across_three_daemons(fleet: Fleet) -> None:
    src = make_file(fleet.site.root / ARTIFACT, os.urandom(2 * 1024 * 1024 + 11))
    first = fleet.upload(src, "--wait", "--servers", "3", "--timeout", "90")
    assert first.returncode == 0, first.stderr
    # At the moment --wait returns, every server has the file, complete.
    for server in fleet.servers.values():
        assert sha256_file(server.out / ARTIFACT) == sha256_file(src)
    v1 = re.search(r"\tversion (\d+)\t", first.stdout)[1]  # type: ignore[index]
    assert f"{ARTIFACT} version {v1}: 3 of 3 servers installed it" in first.stdout

    # Bad wait options are refused before anything is uploaded.
    for bad in (["--servers", "0"], ["--wait", "--timeout", "0"]):
        refused = fleet.upload(src, *bad)
        assert refused.returncode == 2 and refused.stdout == "", refused
        assert len(refused.stderr.strip().splitlines()) == 1

    shown = fleet.status()
    assert sorted(s["name"] for s in shown["servers"]) == sorted(NAMES)
    for server in shown["servers"]:
        item = server["artifacts"][ARTIFACT]
        assert (item["version"], item["sha256"], item["marks"]) == (v1, sha256_file(src), [])
        assert server["groups"] == GROUPS.get(server["name"], [])
        assert server["bytes_from_store"] > src.stat().st_size
    (summary,) = shown["artifacts"]
    assert summary["installed"] == sorted(NAMES)
    assert summary["summary"] == f"3 of 3 servers have {ARTIFACT} version {v1}"
    table = fleet.site.cli("status", "-c", str(fleet.site.upload_conf))
    assert table.returncode == 0 and "web-eu-canary" in table.stdout.decode()

    _check_metrics(fleet, v1)

    # One server stopped: waiting for three fails after the timeout and names it.
    assert fleet.daemons[NAMES[2]].stop() == 0
    src.write_bytes(os.urandom(1000))
    stopped = fleet.upload(src, "--wait", "--servers", "3", "--timeout", "10")
    assert stopped.returncode == 6, stopped.stderr
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith("distsync: error: timed out after 10 s")
    assert f"2 of 3 servers installed it; missing: {NAMES[2]} (has version {v1}; stopped" in line
    assert "Traceback" not in stopped.stderr
    # --all counts live servers only: the stopped one said it was going.
    v2 = re.search(r"\tversion (\d+)\t", stopped.stdout)[1]  # type: ignore[index]
    everyone = fleet.site.cli("status", "-c", str(fleet.site.upload_conf), ARTIFACT)
    assert f"2 of 2 servers have {ARTIFACT} version {v2}" in everyone.stdout.decode()

    # A tampered upload: both running servers reject it, and --wait says so at once.
    live = [fleet.daemons[name] for name in NAMES[:2]]
    for daemon in live:
        os.kill(daemon.proc.pid, signal.SIGSTOP)
    before = fleet.site.objects()
    src.write_bytes(os.urandom(50_000))
    waiting = subprocess.Popen(
        [sys.executable, "-m", "distsync", "upload", "-c", str(fleet.site.upload_conf),
         str(src), "--wait", "--all", "--timeout", "90"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=fleet.site.env(), text=True,
    )  # fmt: skip
    try:
        assert waiting.stdout is not None
        announced = waiting.stdout.readline()  # printed once the upload is announced
        assert f"{ARTIFACT}\tversion " in announced
        (tampered,) = fleet.site.objects() - before
        data = bytearray(tampered.read_bytes())
        data[len(data) // 2] ^= 0x01
        tampered.write_bytes(bytes(data))
    finally:
        for daemon in live:
            os.kill(daemon.proc.pid, signal.SIGCONT)
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 6, err
    (line,) = err.strip().splitlines()
    assert "0 of 2 servers installed it; failed: " in line
    # It ends at the first report of a failure, naming each server that reported one by then.
    named = [name for name in NAMES if re.search(rf"{name} \([^)]*failed authentication", line)]
    assert named and set(named) <= set(NAMES[:2]), line
    v3 = re.search(r"version (\d+): 0 of 2", line)[1]  # type: ignore[index]

    def both_rejected() -> bool:
        (item,) = fleet.status(ARTIFACT, "--version", v3)["artifacts"]
        return sorted(item["failed"]) == sorted(NAMES[:2])

    wait_for(both_rejected, "both running servers to report the rejection", 30, 0.2)
    for name in NAMES[:2]:  # the version before stays in place
        assert fleet.servers[name].out.joinpath(ARTIFACT).stat().st_size == 1000

    _assert_no_plaintext_in_bucket(fleet)


def _check_metrics(fleet: Fleet, version: str) -> None:
    log = fleet.daemons[NAMES[0]].log()
    port = re.search(r"serving metrics on http://127\.0\.0\.1:(\d+)/metrics", log)
    assert port, log
    with urllib.request.urlopen(f"http://127.0.0.1:{port[1]}/metrics", timeout=10) as answer:
        scraped = answer.read().decode()
    textfile = fleet.servers[NAMES[1]].root / "distsync.prom"
    wait_for(lambda: textfile.exists(), "the metrics textfile", 30)
    for text in (scraped, textfile.read_text()):
        samples = _samples(text)
        assert samples[f'distsync_installs_total{{name="{ARTIFACT}"}}'] == 1
        assert samples['distsync_fetched_bytes_total{source="store"}'] > 2 * 1024 * 1024
        assert samples['distsync_fetched_bytes_total{source="peers"}'] == 0
        assert samples["distsync_poll_duration_seconds_count"] >= 1
        assert samples["distsync_poll_errors_total"] == 0
        assert samples["distsync_last_successful_poll_timestamp_seconds"] > 1.7e9
        assert samples[f'distsync_last_install_timestamp_seconds{{name="{ARTIFACT}"}}'] > 1.7e9
        assert samples['distsync_store_requests_total{operation="changed"}'] >= 1
        assert samples['distsync_status_writes_total{result="ok"}'] >= 1
        assert any(key.startswith("distsync_build_info{") for key in samples)
        installed = [k for k in samples if k.startswith("distsync_installed_info{")]
        assert len(installed) == 1 and f'version="{version}"' in installed[0]
    # The textfile is replaced atomically: no temp file is left beside it.
    assert sorted(p.name for p in textfile.parent.glob("distsync.prom*")) == ["distsync.prom"]


def _samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def _assert_no_plaintext_in_bucket(fleet: Fleet) -> None:
    secrets = [*NAMES, ARTIFACT, *(g for groups in GROUPS.values() for g in groups)]
    status_dir = fleet.site.bucket / "distsync" / "v3" / "status"
    assert len(list(status_dir.iterdir())) == 3
    for path in fleet.site.bucket.rglob("*"):
        key = str(path.relative_to(fleet.site.bucket))
        data = path.read_bytes() if path.is_file() else b""
        for text in secrets:
            assert text not in key, key
            assert text.encode() not in data, key
