"""What an idle daemon costs in S3 requests, counted at a real HTTP relay (faultproxy) in
front of a real S3 server: per poll and per status heartbeat. docs/costs.md quotes the
figures this test prints (``pytest -s -k idle_daemon``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from faultproxy import FaultProxy
from s3server import Bucket
from test_fleet_status import _samples
from test_local_flow import wait_for
from test_s3_flow import config_text

STATUS_INTERVAL = 3.0
WINDOW = 15.0


def kind(method: str, path: str) -> str:
    if method == "GET" and "list-type=" in path:
        return "LIST"
    return method


def test_idle_daemon_makes_one_request_per_poll_and_one_put_per_heartbeat(
    bucket: Bucket,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    write_config: Callable[..., Path],
    run_cli: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    uploader = write_config(
        config_text(bucket.endpoint, bucket.name, tmp_path, daemon=False), "u.toml"
    )
    textfile = tmp_path / "distsync.prom"
    extra = f'StatusInterval = {STATUS_INTERVAL}\nMetricsTextfile = "{textfile}"\n'
    daemon_text = config_text(fault_proxy.endpoint, bucket.name, tmp_path, daemon=True)
    daemon_conf = write_config(daemon_text.replace("[AwsCreds]", extra + "[AwsCreds]"), "d.toml")
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(os.urandom(100_000))
    assert run_cli("upload", "-c", str(uploader), str(artifact)).returncode == 0
    env = dict(os.environ, HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true")
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "distsync", "daemon", "-c", str(daemon_conf)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:

        def metrics() -> dict[str, float]:
            return _samples(textfile.read_text()) if textfile.exists() else {}

        wait_for(
            lambda: metrics().get('distsync_installs_total{name="app.bin"}'), "the install", 60
        )
        time.sleep(STATUS_INTERVAL)  # the install's own record is out; from now on it idles
        before, seen = metrics(), len(fault_proxy.requests)
        time.sleep(WINDOW)
        after, requests = metrics(), list(fault_proxy.requests[seen:])
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    polls = (
        after["distsync_poll_duration_seconds_count"]
        - before["distsync_poll_duration_seconds_count"]
    )
    beats = (
        after['distsync_status_writes_total{result="ok"}']
        - before['distsync_status_writes_total{result="ok"}']
    )
    made = Counter(kind(method, path) for method, path in requests)
    print(
        f"\nidle daemon, {WINDOW:g} s: {polls:g} polls, {beats:g} status heartbeats; "
        f"requests {dict(made)}; "
        f"per poll {(made['HEAD'] + made['LIST'] + made['GET']) / polls:.3f} "
        f"(HEAD {made['HEAD'] / polls:.3f}, LIST {made['LIST'] / polls:.3f}, "
        f"GET {made['GET'] / polls:.3f}); "
        f"PUT per heartbeat {made['PUT'] / beats:.2f}"
    )
    assert polls >= 10
    # One conditional HEAD of the marker per poll (the snapshots may split one poll)...
    assert abs(made["HEAD"] - polls) <= 1
    # ... plus, every 20th poll, a listing of the log and a read of the store record (the
    # daemon follows a re-created store); no log entry or object is read while nothing is new.
    assert made["LIST"] <= polls / 20 + 1
    gets = [path for method, path in requests if kind(method, path) == "GET"]
    assert all(path.endswith("/distsync/v3/store") for path in gets), gets
    assert len(gets) <= made["LIST"]
    # Status: one PUT per StatusInterval while nothing changes, and nothing else.
    assert abs(beats - WINDOW / STATUS_INTERVAL) <= 1.5
    assert made["PUT"] == beats
    assert set(made) <= {"HEAD", "LIST", "GET", "PUT"}


def test_prune_costs_one_listing_of_each_kind_and_one_delete_per_pruned_version(
    bucket: Bucket,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    write_config: Callable[..., Path],
    run_cli: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """docs/costs.md ("Retention") quotes what this prints (``pytest -s -k prune_costs``)."""
    direct = write_config(
        config_text(bucket.endpoint, bucket.name, tmp_path, daemon=False), "u.toml"
    )
    relayed = write_config(
        config_text(fault_proxy.endpoint, bucket.name, tmp_path, daemon=False), "p.toml"
    )
    artifact = tmp_path / "app.bin"
    versions = 5
    for n in range(versions):
        artifact.write_bytes(os.urandom(70_000 + n))
        assert run_cli("upload", "-c", str(direct), str(artifact)).returncode == 0
    seen = len(fault_proxy.requests)
    proc = run_cli("prune", "-c", str(relayed), "--keep", "1")
    assert proc.returncode == 0, proc.stderr
    made = Counter(kind(method, path) for method, path in fault_proxy.requests[seen:])
    print(f"\nprune --keep 1 of {versions} versions: requests {dict(made)}")
    # The store record, then the log: one listing and one GET per entry; the contents and
    # the status records: one listing each; then one DELETE per pruned content.
    assert made == {"GET": 1 + versions, "LIST": 3, "DELETE": versions - 1}
