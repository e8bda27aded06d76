"""A real OpenStack Swift for tests: Debian's packages, one node on loopback, under a temp dir.

``SwiftServer`` builds one-replica rings, writes a config for each of the account, container,
object and proxy servers (``bind_ip = 127.0.0.1``, ``workers = 0``, devices in the temp dir,
``mount_check = false``), starts its own memcached on a private port (tempauth keeps tokens
there and answers 503 without it), starts the four servers and waits for ``/healthcheck`` and
a working login. The proxy pipeline has tempauth, s3api, tempurl, SLO and DLO. Three
tempauth users share the account ``test``:

- ``test:tester`` (``.admin``): the account's owner; setup and uploads run as it;
- ``test:reader`` (no groups): reaches nothing until a container ACL names it — the daemon's
  read-only identity;
- ``test:operator`` (``.admin``): a second admin, which setup must refuse as a daemon identity.

``stop()`` terminates every process (kill after a grace period), also when a test failed.
Swift always reads ``/etc/swift/swift.conf`` (the hash suffix); the package ships one.

``ensure_installed()`` installs the packages when they are missing and the process is root (as
in CI); otherwise it raises with the command to run. Nothing is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self

    from keystoneserver import KeystoneServer

__all__ = [
    "ADMIN",
    "OPERATOR",
    "PACKAGES",
    "READER",
    "SwiftServer",
    "SwiftUser",
    "ensure_installed",
]

PACKAGES = ("swift", "swift-proxy", "swift-account", "swift-container", "swift-object", "memcached")
_SERVERS = ("account", "container", "object", "proxy")
# tempurl and s3api authenticate requests themselves, so they come before tempauth.
_PIPELINE = [
    "catch_errors",
    "gatekeeper",
    "healthcheck",
    "proxy-logging",
    "cache",
    "listing_formats",
    "tempurl",
    "s3api",
    "tempauth",
    "copy",
    "slo",
    "dlo",
    "proxy-logging",
    "proxy-server",
]
_INSTALL_LOCK = Path("/tmp/distsync-swift-install.lock")


@dataclass(frozen=True)
class SwiftUser:
    account: str
    user: str
    key: str

    @property
    def name(self) -> str:
        """The tempauth user name (``account:user``), also the referent in container ACLs."""
        return f"{self.account}:{self.user}"


ADMIN = SwiftUser("test", "tester", "testing")
READER = SwiftUser("test", "reader", "reading-only")
# A second admin of the account: what a daemon identity must not be.
OPERATOR = SwiftUser("test", "operator", "operating")


def _missing() -> list[str]:
    needed = [f"swift-{server}-server" for server in _SERVERS] + ["swift-ring-builder", "memcached"]
    missing = [name for name in needed if shutil.which(name) is None]
    if not Path("/etc/swift/swift.conf").is_file():
        missing.append("/etc/swift/swift.conf")
    return missing


def ensure_installed(timeout: float = 900) -> None:
    """Install Debian's Swift packages if they are missing; raise if that is impossible."""
    if not _missing():
        return
    command = [
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        *PACKAGES,
    ]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            f"OpenStack Swift is not installed ({', '.join(_missing())} missing) and this "
            f"process cannot install it: run `{' '.join(command)}` as root"
        )
    # pytest-xdist workers each start a session: one of them installs, the others wait.
    with open(_INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _missing():
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=timeout)
        subprocess.run(command, check=True, env=env, timeout=timeout)
    if _missing():
        raise RuntimeError(f"installing Swift left {', '.join(_missing())} missing")


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


# Swift's defaults (0.5 s to connect between servers, 3-10 s per answer) turn a busy
# 2-core CI machine into 503s; a test server on loopback can wait.
_TIMEOUTS = """\
conn_timeout = 10
node_timeout = 60
recoverable_node_timeout = 60
"""


def _keystone_filters(keystone: KeystoneServer, memcached: int) -> str:
    from keystoneserver import RESELLER, SWIFT_SERVICE

    return f"""
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = {keystone.auth_url}
auth_url = {keystone.auth_url}
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = {SWIFT_SERVICE.project}
username = {SWIFT_SERVICE.name}
password = {SWIFT_SERVICE.password}
delay_auth_decision = True
memcached_servers = 127.0.0.1:{memcached}

[filter:keystoneauth]
use = egg:swift#keystoneauth
reseller_prefix = {RESELLER}
operator_roles = admin, swiftoperator
"""


def _proxy_conf(
    port: int, memcached: int, common: str, keystone: KeystoneServer | None = None
) -> str:
    pipeline = list(_PIPELINE)
    if keystone is not None:
        # tempauth keeps AUTH_ accounts, Keystone projects are KEY_. keystoneauth goes first:
        # it always sets swift.authorize, tempauth replaces it only for its own tokens.
        at = pipeline.index("tempauth")
        pipeline[at:at] = ["authtoken", "keystoneauth"]
    users = "\n".join(
        f"user_{u.account}_{u.user} = {u.key}{'' if u is READER else ' .admin'}"
        for u in (ADMIN, READER, OPERATOR)
    )
    return f"""\
[DEFAULT]
bind_port = {port}
{common}
log_name = proxy

[pipeline:main]
pipeline = {" ".join(pipeline)}

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
{_TIMEOUTS}
[filter:tempauth]
use = egg:swift#tempauth
{users}

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached}

[filter:s3api]
use = egg:swift#s3api

[filter:tempurl]
use = egg:swift#tempurl

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo

[filter:copy]
use = egg:swift#copy

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats
{_keystone_filters(keystone, memcached) if keystone is not None else ""}"""


def _storage_conf(server: str, port: int, common: str) -> str:
    return f"""\
[DEFAULT]
bind_port = {port}
{common}
log_name = {server}

[pipeline:main]
pipeline = {server}-server

[app:{server}-server]
use = egg:swift#{server}
{_TIMEOUTS}
[{server}-replicator]
[{server}-updater]
[{server}-auditor]
"""


class SwiftServer:
    """One Swift node on loopback. ``endpoint`` is the proxy (``/auth/v1.0``, ``/v1/...``)."""

    def __init__(self, root: Path, keystone: KeystoneServer | None = None) -> None:
        self.root = Path(root)
        self.keystone = keystone  # a running Keystone: logins to KEY_ accounts through it
        self.conf = self.root / "conf"
        self.logs = self.root / "logs"
        self.ports: dict[str, int] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.startup_seconds = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def auth_url(self) -> str:
        """The tempauth (v1) login URL, as Rackspace-style configs name it."""
        return f"{self.endpoint}/auth/v1.0"

    def storage_url(self, account: str = ADMIN.account) -> str:
        return f"{self.endpoint}/v1/AUTH_{account}"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> SwiftServer:
        ensure_installed()
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise

    def _start(self, timeout: float) -> SwiftServer:
        started = time.monotonic()
        for attempt in range(3):  # a free port can be taken between choosing and binding
            self._configure()
            self._launch()
            if self._wait_ready(started + timeout):
                self.startup_seconds = time.monotonic() - started
                return self
            clash = self._port_clash()
            self.stop()
            if not clash or attempt == 2:
                break
        raise RuntimeError(
            f"Swift did not start in {timeout:.0f} s; see {self.logs}:\n{self._tail()}"
        )

    def _configure(self) -> None:
        for path in (self.conf, self.root / "devices", self.root / "run"):
            shutil.rmtree(path, ignore_errors=True)
        self.conf.mkdir(parents=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.root / "devices" / "d1").mkdir(parents=True)
        (self.root / "run").mkdir()
        ports = _free_ports(len(_SERVERS) + 1)
        self.ports = dict(zip((*_SERVERS, "memcached"), ports))
        user = pwd.getpwuid(os.geteuid()).pw_name
        common = (
            "bind_ip = 127.0.0.1\n"
            "workers = 0\n"
            f"user = {user}\n"
            f"swift_dir = {self.conf}\n"
            f"devices = {self.root / 'devices'}\n"
            "mount_check = false\n"
            "disable_fallocate = true\n"
            "log_level = INFO"
        )
        for server in ("account", "container", "object"):
            (self.conf / f"{server}-server.conf").write_text(
                _storage_conf(server, self.ports[server], common)
            )
            builder = str(self.conf / f"{server}.builder")
            for args in (
                ["create", "6", "1", "1"],
                ["add", f"r1z1-127.0.0.1:{self.ports[server]}/d1", "1"],
                ["rebalance"],
            ):
                done = subprocess.run(
                    ["swift-ring-builder", builder, *args],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
                # rebalance exits 1 for warnings (e.g. a single zone); 2 is an error.
                if done.returncode not in (0, 1):
                    raise RuntimeError(
                        f"swift-ring-builder {' '.join(args)}: {done.stdout!r} {done.stderr!r}"
                    )
        (self.conf / "proxy-server.conf").write_text(
            _proxy_conf(self.ports["proxy"], self.ports["memcached"], common, self.keystone)
        )
        if self.keystone is not None:
            from keystoneserver import RESELLER

            self.keystone.set_object_store(f"{self.endpoint}/v1/{RESELLER}$(project_id)s")

    def _launch(self) -> None:
        memcached = ["memcached", "-l", "127.0.0.1", "-p", str(self.ports["memcached"]), "-U", "0"]
        if os.geteuid() == 0:
            memcached += ["-u", "root"]  # memcached refuses to run as root without it
        commands = {"memcached": [*memcached, "-m", "16"]}
        for server in _SERVERS:
            commands[server] = [
                f"swift-{server}-server",
                str(self.conf / f"{server}-server.conf"),
                "-v",
            ]
        for name, argv in commands.items():
            log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
            try:
                self.processes[name] = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.root,
                    start_new_session=True,  # a Ctrl-C meant for pytest is not theirs
                )
            finally:
                log.close()

    def _wait_ready(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in self.processes.values()):
                return False
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                if self._request("GET", "/healthcheck")[0] == 200:
                    token = self.token(ADMIN)
                    # A container round trip: the account exists (autocreated) once it works.
                    path = f"/v1/AUTH_{ADMIN.account}/ready-check"
                    status, _ = self._request("PUT", path, {"X-Auth-Token": token})
                    if status in (201, 202):
                        self._request("DELETE", path, {"X-Auth-Token": token})
                        return True
            time.sleep(0.2)
        return False

    def _port_clash(self) -> bool:
        for path in self.logs.glob("*.log"):
            with contextlib.suppress(OSError):
                if "in use" in path.read_text(errors="replace"):
                    return True
        return False

    def _tail(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self, timeout: float = 10.0) -> None:
        processes, self.processes = self.processes, {}
        for process in processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)

    def alive(self) -> bool:
        return bool(self.processes) and all(p.poll() is None for p in self.processes.values())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- plain HTTP, to arrange and inspect behind the engine's back --------------------------

    def _request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["proxy"], timeout=30)
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, response

    def token(self, user: SwiftUser) -> str:
        status, response = self._request(
            "GET", "/auth/v1.0", {"X-Auth-User": user.name, "X-Auth-Key": user.key}
        )
        if status != 200:
            raise RuntimeError(f"tempauth login of {user.name} answered HTTP {status}")
        return str(response.getheader("X-Auth-Token"))

    def call(
        self,
        method: str,
        path: str,
        *,
        user: SwiftUser = ADMIN,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request as ``user`` to ``/v1/AUTH_<account>/<path>``: (status, body, headers)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["proxy"], timeout=60)
        try:
            all_headers = {"X-Auth-Token": self.token(user), **(headers or {})}
            url = f"/v1/AUTH_{user.account}/{path.lstrip('/')}"
            conn.request(
                method, url, body=body if method in ("PUT", "POST") else None, headers=all_headers
            )
            response = conn.getresponse()
            data = response.read()
            return response.status, data, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def listing(self, container: str) -> list[str]:
        status, data, _ = self.call("GET", f"{container}?format=json&limit=10000")
        if status == 404:
            return []
        if status != 200:
            raise RuntimeError(f"listing {container} answered HTTP {status}")
        return [item["name"] for item in json.loads(data)]


if __name__ == "__main__":
    # `python3 tests/system/swiftserver.py` (as root): install the packages, as .ci/run does.
    ensure_installed()
    print("swift: " + ", ".join(PACKAGES) + " installed")
