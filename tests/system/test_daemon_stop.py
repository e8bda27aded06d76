"""A daemon whose store hangs still stops promptly on SIGTERM (systemd's stop timeout is 90 s;
boto3's retries against a silent server would take minutes)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distsync.crypto.secret import generate_secret


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_sigterm_with_a_hanging_store(tmp_path: Path, silent_server: int) -> None:
    config = tmp_path / "distsyncd.toml"
    config.write_text(
        f'SharedSecret = "{generate_secret()}"\nStorageBucket = "b"\nStorage = "S3"\n'
        f'OutputDir = "{tmp_path / "out"}"\nStateDir = "{tmp_path / "state"}"\n'
        f'PollInterval = 1\nPollJitter = 0\n[AwsCreds]\nAccessKey = "k"\nSecretKey = "s"\n'
        f'Endpoint = "http://127.0.0.1:{silent_server}"\n'
    )
    config.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "distsync", "daemon", "-c", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    try:
        time.sleep(3)  # well into the first (hanging) request
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert "received SIGTERM" in err and "did not answer" in err
    assert "Traceback" not in err
