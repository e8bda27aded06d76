"""A real OpenStack Keystone (v3) for tests: Debian's packages, sqlite, fernet tokens, loopback.

``KeystoneServer`` writes a keystone.conf under a temp dir, runs ``keystone-manage db_sync``,
``fernet_setup``, ``credential_setup`` and ``bootstrap``, serves ``keystone-wsgi-public`` on a
free port, and then, through the identity API as the bootstrap admin, makes:

- the project ``service`` with the user ``swift`` (role ``admin``): Swift's authtoken
  middleware validates tokens as it;
- the project ``builds`` with ``ci`` (role ``swiftoperator``: may create containers and set
  ACLs in the project's account, like an admin) and ``fleet`` (role ``member``: nothing in
  Swift until a container ACL names it — the daemons' identity);
- the role ``swiftoperator`` and, once Swift's port is known (``set_object_store``), the
  ``object-store`` service and its public endpoint in ``RegionOne``.

Swift serves Keystone projects under the reseller prefix ``KEY_`` (tempauth keeps ``AUTH_``).
``ensure_installed()`` installs python3-keystone and python3-keystonemiddleware when missing
and root; otherwise it raises. Nothing is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Self

__all__ = ["CI", "FLEET", "PACKAGES", "KeystoneServer", "KeystoneUser", "ensure_installed"]

PACKAGES = ("python3-keystone", "python3-keystonemiddleware")
_PYTHON = "/usr/bin/python3"  # Debian's, where the packages live
_LOCK = Path("/tmp/distsync-swift-install.lock")
RESELLER = "KEY_"


@dataclass(frozen=True)
class KeystoneUser:
    name: str
    password: str
    project: str = "builds"
    role: str = "member"


ADMIN_PASSWORD = "keystone-admin"
SWIFT_SERVICE = KeystoneUser("swift", "swift-service", project="service", role="admin")
CI = KeystoneUser("ci", "ci-password", role="swiftoperator")
FLEET = KeystoneUser("fleet", "fleet-password", role="member")


def _missing() -> list[str]:
    missing = [
        tool for tool in ("keystone-manage", "keystone-wsgi-public") if not shutil.which(tool)
    ]
    probe = subprocess.run(
        [_PYTHON, "-c", "import keystone, keystonemiddleware.auth_token"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        missing.append("keystonemiddleware")
    return missing


def ensure_installed(timeout: float = 900) -> None:
    """Install Debian's Keystone packages if they are missing; raise if that is impossible."""
    if not _missing():
        return
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    if os.geteuid() != 0:
        raise RuntimeError(
            f"Keystone is not installed ({', '.join(_missing())} missing): run "
            f"`{' '.join(command)}` as root"
        )
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _missing():
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=timeout)
            subprocess.run(command, check=True, env=env, timeout=timeout)
    if _missing():
        raise RuntimeError(f"installing Keystone left {', '.join(_missing())} missing")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KeystoneServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.ids: dict[str, str] = {}  # "project:NAME", "user:NAME", "role:NAME" -> id
        self._token = ""
        self.startup_seconds = 0.0

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> KeystoneServer:
        ensure_installed()
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise

    def _start(self, timeout: float) -> KeystoneServer:
        started = time.monotonic()
        shutil.rmtree(self.root, ignore_errors=True)
        for sub in ("fernet-keys", "fernet-receipts", "credential-keys", "logs"):
            (self.root / sub).mkdir(parents=True)
        self.port = _free_port()
        conf = self.root / "keystone.conf"
        conf.write_text(
            "[DEFAULT]\nuse_stderr = true\n"
            f"[database]\nconnection = sqlite:///{self.root / 'keystone.db'}\n"
            "[token]\nprovider = fernet\n"
            f"[fernet_tokens]\nkey_repository = {self.root / 'fernet-keys'}\n"
            f"[fernet_receipts]\nkey_repository = {self.root / 'fernet-receipts'}\n"
            f"[credential]\nkey_repository = {self.root / 'credential-keys'}\n"
        )
        user = ["--keystone-user", "root", "--keystone-group", "root"]
        url = f"{self.auth_url}/"
        bootstrap = ["bootstrap", "--bootstrap-password", ADMIN_PASSWORD]
        for kind in ("admin", "public", "internal"):
            bootstrap += [f"--bootstrap-{kind}-url", url]
        bootstrap += ["--bootstrap-region-id", "RegionOne"]
        # Each keystone-manage takes seconds to import: the three independent steps run at once.
        self._manage(conf, ["db_sync"], ["fernet_setup", *user], ["credential_setup", *user])
        # Keystone leaves read transactions open on sqlite; in WAL mode they do not block the
        # next write ("database is locked").
        with contextlib.closing(sqlite3.connect(self.root / "keystone.db")) as db:
            db.execute("PRAGMA journal_mode=WAL")
        self._manage(conf, bootstrap)
        with open(self.root / "logs" / "keystone.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    "keystone-wsgi-public",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--",
                    "--config-file",
                    str(conf),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"keystone exited early: see {self.root}/logs/keystone.log")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self._call("GET", "/v3")[0] == 200:
                    break
            time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"keystone did not answer in {timeout:.0f} s")
        self._provision()
        self.startup_seconds = time.monotonic() - started
        return self

    def _manage(self, conf: Path, *commands: list[str], timeout: float = 300) -> None:
        """Run ``keystone-manage`` commands in parallel; raise if any fails."""
        with open(self.root / "logs" / "manage.log", "ab") as log:
            running = [
                (
                    args[0],
                    subprocess.Popen(
                        ["keystone-manage", "--config-file", str(conf), *args],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    ),
                )
                for args in commands
            ]
            failed = []
            for name, process in running:
                try:
                    if process.wait(timeout) != 0:
                        failed.append(name)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    failed.append(name)
        if failed:
            raise RuntimeError(f"keystone-manage {', '.join(failed)} failed: see {self.root}/logs")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the identity API -------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str = ""
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = {"Content-Type": "application/json"}
            if token:
                headers["X-Auth-Token"] = token
            conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            parsed = json.loads(data) if data.strip().startswith(b"{") else {}
            return response.status, parsed, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def token(self, user: str, password: str, project: str) -> str:
        status, _, headers = self._call(
            "POST",
            "/v3/auth/tokens",
            {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": user,
                                "domain": {"id": "default"},
                                "password": password,
                            }
                        },
                    },
                    "scope": {"project": {"name": project, "domain": {"id": "default"}}},
                }
            },
        )
        if status != 201:
            raise RuntimeError(f"keystone login of {user} answered HTTP {status}")
        return headers["x-subject-token"]

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        for _attempt in range(20):
            status, data, _ = self._call(method, path, body, self._token)
            if status != 500:
                break
            time.sleep(0.5)  # sqlite: "database is locked" while keystone commits elsewhere
        if status >= 300:
            raise RuntimeError(f"keystone {method} {path} answered HTTP {status}: {data}")
        return data

    def _find(self, kind: str, name: str) -> str:
        found = self._admin("GET", f"/v3/{kind}s?name={name}")[f"{kind}s"]
        return str(found[0]["id"])

    def _provision(self) -> None:
        self._token = self.token("admin", ADMIN_PASSWORD, "admin")
        for role in ("admin", "member", "reader"):
            self.ids[f"role:{role}"] = self._find("role", role)
        self.ids["role:swiftoperator"] = self._admin(
            "POST", "/v3/roles", {"role": {"name": "swiftoperator"}}
        )["role"]["id"]
        for project in ("service", "builds"):
            self.ids[f"project:{project}"] = self._admin(
                "POST",
                "/v3/projects",
                {"project": {"name": project, "domain_id": "default"}},
            )["project"]["id"]
        for user in (SWIFT_SERVICE, CI, FLEET):
            user_id = self._admin(
                "POST",
                "/v3/users",
                {"user": {"name": user.name, "password": user.password, "domain_id": "default"}},
            )["user"]["id"]
            self.ids[f"user:{user.name}"] = user_id
            project_id = self.ids[f"project:{user.project}"]
            role_id = self.ids[f"role:{user.role}"]
            self._admin("PUT", f"/v3/projects/{project_id}/users/{user_id}/roles/{role_id}")

    def set_object_store(self, url: str) -> None:
        """Register Swift's public endpoint (``url`` holds ``$(project_id)s``)."""
        service = self.ids.get("service:swift")
        if service is None:
            service = self._admin(
                "POST", "/v3/services", {"service": {"type": "object-store", "name": "swift"}}
            )["service"]["id"]
            self.ids["service:swift"] = service
        endpoint = {"interface": "public", "region_id": "RegionOne", "url": url}
        existing = self.ids.get("endpoint:swift")
        if existing is None:
            self.ids["endpoint:swift"] = self._admin(
                "POST", "/v3/endpoints", {"endpoint": dict(endpoint, service_id=service)}
            )["endpoint"]["id"]
        else:
            self._admin("PATCH", f"/v3/endpoints/{existing}", {"endpoint": endpoint})

    def referent(self, user: KeystoneUser) -> str:
        """How a Swift container ACL names ``user`` (``project_id:user_id``)."""
        return f"{self.ids['project:' + user.project]}:{self.ids['user:' + user.name]}"

    def swift_account(self, project: str = "builds") -> str:
        return RESELLER + self.ids[f"project:{project}"]


if __name__ == "__main__":
    # `python3 tests/system/keystoneserver.py` (as root): install the packages, as .ci/run does.
    ensure_installed()
    print("keystone: " + ", ".join(PACKAGES) + " installed")
