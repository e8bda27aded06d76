"""A daemon stops within seconds on SIGTERM whatever it waits for (systemd's stop timeout is
90 s; boto3's retries against a silent server take minutes), and feeds systemd's watchdog
only while its work moves."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distsync.crypto.secret import generate_secret
from s3server import ACCESS_KEY, SECRET_KEY, Bucket


def _daemon_config(path: Path, storage: str, endpoint: str, bucket: str = "b") -> Path:
    path.write_text(
        f'SharedSecret = "{generate_secret()}"\nStorageBucket = "{bucket}"\n'
        f'Storage = "{storage}"\nTorrentPort = 0\n'
        f'OutputDir = "{path.parent / "out"}"\nStateDir = "{path.parent / "state"}"\n'
        f'PollInterval = 1\nPollJitter = 0\n[AwsCreds]\nAccessKey = "{ACCESS_KEY}"\n'
        f'SecretKey = "{SECRET_KEY}"\nEndpoint = "{endpoint}"\n'
    )
    path.chmod(0o600)
    return path


def _stop(proc: subprocess.Popen[str]) -> tuple[float, str]:
    """SIGTERM; how long until it exited, and its stderr."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return time.monotonic() - started, err


@pytest.mark.parametrize("storage", ["S3", "S3+BitTorrent"])
def test_sigterm_with_a_hanging_store(tmp_path: Path, silent_server: int, storage: str) -> None:
    config = _daemon_config(tmp_path / "d.toml", storage, f"http://127.0.0.1:{silent_server}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "distsync", "daemon", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    time.sleep(3)  # well into the first (hanging) request
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    elapsed, err = _stop(proc)
    assert proc.returncode == 0, err
    assert elapsed < 5, f"took {elapsed:.1f} s to stop:\n{err}"
    assert "received SIGTERM" in err and "stopped while waiting for S3 bucket b" in err, err
    assert "Traceback" not in err and err.rstrip().endswith("stopped"), err


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """systemd's side of sd_notify: a datagram socket the daemon reports to."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.1)
    yield sock
    sock.close()


def _messages(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """Every message that arrives within ``seconds``, with its arrival time."""
    got: list[tuple[float, str]] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        with contextlib.suppress(TimeoutError):
            got.append((time.monotonic() - started, sock.recv(4096).decode()))
    return got


def _watched_daemon(tmp_path: Path, config: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        HOME=str(tmp_path),
        NOTIFY_SOCKET=str(tmp_path / "notify"),
        WATCHDOG_USEC="2000000",  # WatchdogSec=2: pings every second
    )
    return subprocess.Popen(
        [sys.executable, "-m", "distsync", "daemon", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_the_watchdog_starves_while_the_store_hangs(
    tmp_path: Path, silent_server: int, notify_socket: socket.socket
) -> None:
    """The worker thread is alive but its work stands still: no more WATCHDOG=1."""
    config = _daemon_config(tmp_path / "d.toml", "S3", f"http://127.0.0.1:{silent_server}")
    proc = _watched_daemon(tmp_path, config)
    try:
        got = _messages(notify_socket, 8)
    finally:
        _elapsed, err = _stop(proc)
    pings = [at for at, message in got if message == "WATCHDOG=1"]
    assert "READY=1" in [message for _at, message in got], got
    assert pings and max(pings) < 5, got  # fed for the allowance (2 s), then starved
    assert "no longer feeding the watchdog" in err, err


def test_the_watchdog_is_fed_while_the_daemon_works(
    tmp_path: Path, bucket: Bucket, notify_socket: socket.socket
) -> None:
    config = _daemon_config(tmp_path / "d.toml", "S3", bucket.endpoint, bucket.name)
    proc = _watched_daemon(tmp_path, config)
    try:
        got = _messages(notify_socket, 8)
    finally:
        _elapsed, err = _stop(proc)
    pings = [at for at, message in got if message == "WATCHDOG=1"]
    assert len(pings) >= 5 and max(pings) > 6, (got, err)
    assert "no longer feeding" not in err, err


def test_sigterm_while_the_on_update_hook_runs(tmp_path: Path) -> None:
    """A hook that would run for ten minutes is ended as systemd would end it."""
    secret = generate_secret()
    (tmp_path / "bucket").mkdir()
    bucket = tmp_path / "bucket"
    common = f'SharedSecret = "{secret}"\nStorageBucket = "{bucket}"\nStorage = "Local"\n'
    upload = tmp_path / "up.toml"
    upload.write_text(common)
    daemon = tmp_path / "d.toml"
    daemon.write_text(
        common + f'OutputDir = "{tmp_path / "out"}"\nStateDir = "{tmp_path / "state"}"\n'
        'PollInterval = 0.2\nPollJitter = 0\nOnUpdate = ["sleep", "600"]\n'
    )
    for path in (upload, daemon):
        path.chmod(0o600)
    (tmp_path / "app.bin").write_bytes(os.urandom(1000))
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "distsync", "daemon", "-c", str(daemon)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        artifact = str(tmp_path / "app.bin")
        done = subprocess.run(
            [sys.executable, "-m", "distsync", "upload", "-c", str(upload), artifact],
            capture_output=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 30
        while not (tmp_path / "out" / "app.bin").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "not installed"
            time.sleep(0.1)
        time.sleep(1)  # the hook is running
    finally:
        elapsed, err = _stop(proc)
    assert proc.returncode == 0, err
    assert elapsed < 8, f"took {elapsed:.1f} s to stop:\n{err}"
    assert "OnUpdate hook sleep ended: the daemon is stopping" in err, err
