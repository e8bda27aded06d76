"""The real CLI, as separate processes, on a real Swift set up by ``distsync setup``.

Upload, list, download and ``daemon`` run exactly as an operator runs them, with the configs
setup wrote (the daemon as the read-only identity); the tests look at the containers behind
their back with plain HTTP (and tamper with them).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from distsync.crypto.secret import generate_secret
from swiftfleet import SwiftFleet, artifact
from swiftserver import SwiftServer

MiB = 1 << 20


@pytest.fixture
def fleet(swift_server: SwiftServer, swift_container: str, tmp_path: Path) -> SwiftFleet:
    fleet = SwiftFleet(swift_server, swift_container, tmp_path)
    result = fleet.setup()
    assert result.returncode == 0, result.stderr.decode()
    return fleet


def everything(fleet: SwiftFleet) -> list[tuple[str, str]]:
    """(container, name) of every object setup's three containers hold."""
    return [
        (container, name)
        for container in (fleet.container + s for s in ("", "_segments", "_daemons"))
        for name in fleet.server.listing(container)
    ]


def test_upload_list_download_and_install(fleet: SwiftFleet) -> None:
    names = ["frontend-release-7f3a.tar.gz", "worker-image-2b91.docker"]
    big = artifact(fleet.tmp, names[0], 9 * MiB + 5)  # two SLO segments
    small = artifact(fleet.tmp, names[1], 300_000)
    fleet.upload(big)
    fleet.upload(small)
    listing = json.loads(fleet.ok("list", "--json", "-c", str(fleet.uploader)))
    assert sorted(row["name"] for row in listing) == sorted(names)

    out = fleet.tmp / "downloads"
    out.mkdir()
    fleet.ok("download", names[0], "-o", str(out), "-c", str(fleet.uploader))
    assert (out / names[0]).read_bytes() == big.read_bytes()

    result = fleet.daemon_once()
    assert result.returncode == 0, result.stderr.decode()
    assert (fleet.installed / names[0]).read_bytes() == big.read_bytes()
    assert (fleet.installed / names[1]).read_bytes() == small.read_bytes()

    # Names appear nowhere in the store: names of objects, headers, or bodies.
    stored = everything(fleet)
    # 2 objects, 2 log entries, the marker, the store record
    assert len([1 for c, _ in stored if c == fleet.container]) == 6
    assert len([1 for c, _ in stored if c.endswith("_segments")]) == 2
    for container, key in stored:
        _status, body, headers = fleet.server.call("GET", f"{container}/{key}")
        visible = key + json.dumps(headers)
        for name in names:
            for form in (name, name.split(".")[0], name.encode().hex()):
                assert form not in visible
            assert name.encode() not in body
        assert not [h for h in headers if h.startswith("x-object-meta-")]


def test_a_flipped_byte_is_rejected_and_the_previous_install_stays(fleet: SwiftFleet) -> None:
    first = artifact(fleet.tmp, "app.tar.gz", 700_000)
    fleet.upload(first)
    assert fleet.daemon_once().returncode == 0
    installed = fleet.installed / "app.tar.gz"
    assert installed.read_bytes() == first.read_bytes()

    before = set(fleet.server.listing(fleet.container))
    second = artifact(fleet.tmp, "v2", 700_000)
    fleet.upload(second, name="app.tar.gz")
    (key,) = [k for k in set(fleet.server.listing(fleet.container)) - before if "/objects/" in k]
    path = f"{fleet.container}/{key}"
    stored = bytearray(fleet.server.call("GET", path)[1])
    stored[len(stored) // 2] ^= 0x01
    assert fleet.server.call("PUT", path, body=bytes(stored))[0] == 201

    result = fleet.daemon_once()
    log = result.stderr.decode()
    assert result.returncode == 1
    assert "rejected app.tar.gz version 2" in log and "failed authentication" in log
    assert "Traceback" not in log
    assert installed.read_bytes() == first.read_bytes()
    assert sorted(p.name for p in fleet.installed.iterdir()) == ["app.tar.gz"]  # no temp left


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_running_daemon_installs_and_stops_on_sigterm(fleet: SwiftFleet) -> None:
    log_path = fleet.tmp / "daemon.log"
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "distsync", "daemon", "-c", str(fleet.daemon)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=fleet.env(),
        )
    try:

        def log() -> str:
            return log_path.read_text(errors="replace")

        wait_for(lambda: "watching Swift container" in log(), 30, "the daemon to start")
        source = artifact(fleet.tmp, "live.tar.gz", 2 * MiB)
        fleet.upload(source)
        target = fleet.installed / "live.tar.gz"
        wait_for(target.exists, 60, "the install")
        assert target.read_bytes() == source.read_bytes()
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        assert "received SIGTERM, stopping" in log() and "Traceback" not in log()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_200_mib_artifact_goes_up_as_an_slo_with_bounded_memory(fleet: SwiftFleet) -> None:
    """Memory is measured on the real processes (wait4's peak RSS of each one)."""
    size = 200 * MiB + 12_345
    source = artifact(fleet.tmp, "image.docker", size)
    status, err, baseline = fleet.run_measured("list", "-c", str(fleet.uploader))
    assert status == 0, err

    started = time.monotonic()
    status, err, upload_peak = fleet.run_measured("upload", "-c", str(fleet.uploader), str(source))
    upload_seconds = time.monotonic() - started
    assert status == 0, err
    (key,) = [k for k in fleet.server.listing(fleet.container) if "/objects/" in k]
    status, body, headers = fleet.server.call(
        "GET", f"{fleet.container}/{key}?multipart-manifest=get"
    )
    assert headers.get("x-static-large-object") == "True"
    segments = json.loads(body)
    assert len(segments) == 26  # 8 MiB segments
    assert sum(s["bytes"] for s in segments) > size

    started = time.monotonic()
    status, err, daemon_peak = fleet.run_measured("daemon", "--once", "-c", str(fleet.daemon))
    install_seconds = time.monotonic() - started
    assert status == 0, err
    digest = hashlib.sha256()
    with open(fleet.installed / "image.docker", "rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    with open(source, "rb") as handle:
        assert digest.hexdigest() == hashlib.file_digest(handle, "sha256").hexdigest()

    report = (
        f"baseline {baseline / MiB:.0f} MiB, upload {upload_peak / MiB:.0f} MiB "
        f"({upload_seconds:.1f} s), install {daemon_peak / MiB:.0f} MiB ({install_seconds:.1f} s)"
    )
    print(report)
    # Segment buffers (4 workers + 2) x 8 MiB plus the crypto's own: far below the artifact.
    assert upload_peak - baseline < 100 * MiB, report
    assert daemon_peak - baseline < 100 * MiB, report
    os.unlink(source)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Listens and never accepts: connections complete in the kernel's backlog, requests are
    never answered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


def test_sigterm_with_a_swift_that_never_answers(tmp_path: Path, silent_server: int) -> None:
    """The login itself hangs (swiftclient's timeout x retries would take minutes): the
    daemon still stops promptly, as systemd expects."""
    config = tmp_path / "distsyncd.toml"
    config.write_text(
        f'SharedSecret = "{generate_secret()}"\nStorageBucket = "c"\nStorage = "Swift"\n'
        f'OutputDir = "{tmp_path / "out"}"\nStateDir = "{tmp_path / "state"}"\n'
        "PollInterval = 1\nPollJitter = 0\n[SwiftCreds]\n"
        f'AuthURL = "http://127.0.0.1:{silent_server}/auth/v1.0"\n'
        'Username = "test:reader"\nAPIKey = "k"\n'
    )
    config.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "distsync", "daemon", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        seen = ""
        while "watching Swift container" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()  # started: the signal handlers are in place
        time.sleep(2)  # well into the first (hanging) login
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, seen + err
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert "received SIGTERM" in err and "Traceback" not in seen + err
