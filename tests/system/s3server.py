"""A real S3 HTTP server for tests: moto in server mode, as a separate process on loopback.

``MotoServer`` starts ``moto_server -H 127.0.0.1 -p PORT`` on a free port, waits until it
answers, wipes its state with ``POST /moto-api/reset`` and stops it (terminate, then kill) —
also when a test fails. ``stop()`` then ``start()`` restarts it on the same port, the way a
store that was down for a while comes back (moto keeps nothing across restarts).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig

if TYPE_CHECKING:
    from typing import Self

__all__ = ["ACCESS_KEY", "SECRET_KEY", "Bucket", "MotoServer", "free_port", "s3_client"]

# moto accepts any credentials unless IAM enforcement is switched on.
ACCESS_KEY = "AKIATESTDISTSYNC0000"
SECRET_KEY = "test-secret-key-not-real"
REGION = "us-east-1"


@dataclass
class Bucket:
    """A bucket on a test server, and a plain boto3 client to look behind the engine's back."""

    endpoint: str
    name: str
    client: Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_client(endpoint: str, **config: Any) -> Any:
    """A plain boto3 client for arranging and inspecting the bucket behind the engine's back."""
    settings: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        "retries": {"mode": "standard", "total_max_attempts": 3},
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    settings.update(config)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=BotoConfig(**settings),
    )


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


class MotoServer:
    def __init__(
        self, log_dir: Path, *, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.log_dir = Path(log_dir)
        self.port = port or 0
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"moto-{self.port}.log"

    def start(self, timeout: float = 20.0) -> MotoServer:
        """Start (or restart on the same port) and wait until it serves requests."""
        if self.process is not None and self.process.poll() is None:
            return self
        for _ in range(3):  # a free port can be taken between choosing and binding it
            if not self.port:
                self.port = free_port()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            env = dict(os.environ, **self.env)
            # Small parts keep multipart tests fast (real S3 wants >= 5 MiB but the last).
            env.setdefault("S3_UPLOAD_PART_MIN_SIZE", str(64 << 10))
            self.process = subprocess.Popen(
                _moto_command(self.port),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for pytest is not the server's
            )
            if self._wait_ready(timeout):
                return self
            self.stop()
            if not self._was_port_clash():
                break
            self.port = 0
        raise RuntimeError(f"moto server did not start; see {self.log_path}")

    def _was_port_clash(self) -> bool:
        with contextlib.suppress(OSError):
            return "in use" in self.log_path.read_text(errors="replace")
        return False

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/moto-api/")
                    if conn.getresponse().status == 200:
                        return True
                finally:
                    conn.close()
            time.sleep(0.05)
        return False

    def reset(self) -> None:
        """Wipe every bucket and object (far faster than a restart)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/moto-api/reset")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"moto reset answered HTTP {response.status}")
        finally:
            conn.close()

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **config: Any) -> Any:
        return s3_client(self.endpoint, **config)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
