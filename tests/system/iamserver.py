"""A server that enforces IAM policies: ministack with ``AUTH=true``, a process on loopback.

With ``AUTH=true`` ministack checks every request's SigV4 signature, resolves its access key
to an IAM user and evaluates that user's policies (identity policies, ``s3:prefix`` and other
request condition keys, explicit denies) before S3 sees it; presigned URLs work too. The root
identity is the access key ``test`` (secret ``test``): it bootstraps the admin user that runs
``distsync setup`` and inspects what setup did.

moto's server (``INITIAL_NO_AUTH_ACTION_COUNT``) was the other candidate: it evaluates no S3
condition keys at all (only ``sts:ExternalId``), so a prefix-scoped ``ListBucket`` cannot be
tested there, and its presigned URLs fail with auth on.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig

if TYPE_CHECKING:
    from typing import Self

__all__ = ["ROOT", "IamServer", "Keys"]

REGION = "us-east-1"


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str = field(repr=False)


ROOT = Keys("test", "test")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class IamServer:
    """``with IamServer(workdir) as server:`` — started on a free port, stopped on exit."""

    def __init__(
        self, workdir: Path, start_timeout: float = 30.0, services: str = "s3,iam,sts"
    ) -> None:
        """``services``: what ministack serves (e.g. ``"s3"`` plays an S3-only store)."""
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.services = services
        self.port = 0
        self.endpoint = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # A clean environment: ministack treats whatever AWS_ACCESS_KEY_ID it sees as root,
        # and must not pick up the credentials a test passes to the CLI.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "MINISTACK_", "LOCALSTACK_"))
        }
        env.update(
            AUTH="true",
            AWS_ACCESS_KEY_ID=ROOT.access_key_id,
            AWS_SECRET_ACCESS_KEY=ROOT.secret_access_key,
            BIND_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            S3_DATA_DIR=str(self.workdir / "s3"),
            SERVICES=self.services,
            # Off: extra listeners on fixed ports (MQTT 8883, SFTP) we do not need.
            IOT_MTLS_ENABLED="0",
            SFTP_ENABLED="0",
            LOG_LEVEL="WARNING",
        )
        self._log = open(self.workdir / "ministack.log", "ab")  # noqa: SIM115 - closed in stop
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ministack"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # so stop() can end its whole process group
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"ministack exited early: see {self.workdir}/ministack.log")
            if self._healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ministack did not answer within {self.start_timeout:g} s")

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            conn.request("GET", "/_ministack/health")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, service: str, keys: Keys = ROOT) -> Any:
        """A plain boto3 client acting as ``keys`` (root by default), with no retries, so a
        refusal shows as the first answer."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            config=BotoConfig(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def user_with_policy(self, name: str, policy: dict[str, Any] | None) -> Keys:
        """As root: an IAM user with ``policy`` inline (or none at all) and an access key."""
        import json

        iam = self.client("iam")
        iam.create_user(UserName=name)
        if policy is not None:
            iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])
