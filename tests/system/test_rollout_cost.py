"""What a daemon holding back a version for its wave costs in S3 requests, counted at a real
HTTP relay (faultproxy) in front of a real S3 server: the gate reads the fleet's records once
per StatusInterval, and the polls in between cost what an idle poll costs (one HEAD)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from faultproxy import FaultProxy
from s3server import Bucket
from test_local_flow import wait_for
from test_s3_flow import config_text
from test_status_cost import kind

STATUS_INTERVAL = 3.0
WINDOW = 12.0


def test_held_version_costs_one_fleet_read_per_status_interval(
    bucket: Bucket,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    write_config: Callable[..., Path],
    run_cli: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    uploader = write_config(
        config_text(bucket.endpoint, bucket.name, tmp_path, daemon=False), "u.toml"
    )
    daemon_text = config_text(fault_proxy.endpoint, bucket.name, tmp_path, daemon=True)
    extra = f"StatusInterval = {STATUS_INTERVAL}\n"
    daemon_conf = write_config(daemon_text.replace("[AwsCreds]", extra + "[AwsCreds]"), "d.toml")
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(os.urandom(10_000))
    env = dict(os.environ, HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "distsync", "daemon", "-c", str(daemon_conf)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_for(lambda: b"reporting status as" in log_path.read_bytes(), "the daemon", 60)
        # Frozen while the upload and its halt go in: it sees the version halted at once.
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            up = run_cli("upload", "-c", str(uploader), str(artifact), "--waves", "1,100%")
            assert up.returncode == 0, up.stderr
            halt = run_cli("rollout", "-c", str(uploader), "app.bin", "--halt")
            assert halt.returncode == 0, halt.stderr
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        wait_for(lambda: b"waits: halted by" in log_path.read_bytes(), "the halt", 60)
        seen = len(fault_proxy.requests)
        time.sleep(WINDOW)
        requests = list(fault_proxy.requests[seen:])
        assert not (tmp_path / "installed" / "app.bin").exists()
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    made = Counter(kind(method, path) for method, path in requests)
    polls = made["HEAD"]  # one conditional HEAD of the marker per poll
    reads = WINDOW / STATUS_INTERVAL + 1
    print(f"\nheld version, {WINDOW:g} s: {polls} polls; requests {dict(made)}")
    assert polls >= 10
    # Each fleet read: LIST + GET of the status records, GET of the halt record, and the
    # cycle's LIST of the log and GET of the manifest; plus every 20th poll's LIST and GET of
    # the store record. Without the gate's rest it would be a LIST and a GET on every poll.
    assert made["LIST"] <= 2 * reads + polls / 20 + 1
    assert made["GET"] <= 3 * reads + polls / 20 + 1
