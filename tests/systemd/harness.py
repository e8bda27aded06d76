"""A fleet of real systemd containers on a private network, for tests of the daemon role.

Nothing here touches the host's network: every container boots (``systemd-nspawn --boot
--volatile=overlay``) in a network namespace of its own, wired by veth pairs to a bridge that
lives in yet another namespace, and Ansible runs from a controller namespace on the same
bridge. The host gets no interface, address or route. Every wait is bounded, and ``close()``
removes containers, namespaces and their processes whatever state a run ended in; run.sh's
trap repeats it from the state files should the Python process itself die.

PID 1 of this machine is not systemd, so nspawn runs with ``--register=no --keep-unit`` and
containers are entered with ``nsenter -t LEADER``. Each container boots its own root (a
fleet may mix Debian 12 and 13); systemd 256 and later refuse this host's cgroup v1, so their
containers get the unified hierarchy (``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1``). A wrong leader
pid would silently target the host's own PID 1: ``Container.leader`` is re-checked (own pid
and mount namespaces, own root directory, comm ``systemd``) before every use.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

__all__ = ["Container", "Fleet", "PlaybookRun", "sh", "systemd_version", "wait_for"]

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class CommandFailed(RuntimeError):
    pass


def sh(
    cmd: Sequence[object],
    *,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell), bounded in time; a failure carries its output."""
    argv = [str(part) for part in cmd]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, input=input, check=False
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (CommandFailed, NotReady, OSError, subprocess.TimeoutExpired) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}: {last_error}")
        time.sleep(every)


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.x.0/24 that no host address or route overlaps."""
    used: list[ipaddress.IPv4Network] = []
    for line in sh(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            used.append(ipaddress.IPv4Interface(match.group(1)).network)
    for line in sh(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest and dest[0].isdigit():
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(dest, strict=False))
    for third in range(1, 255):
        net = ipaddress.IPv4Network(f"10.213.{third}.0/24")
        if not any(net.overlaps(other) for other in used):
            return net
    raise RuntimeError("no free 10.213.x.0/24 subnet on this host")


def systemd_version(root: Path) -> int:
    """The systemd version a root file system holds (from its libsystemd-shared-NNN.so)."""
    usr_lib = root / "usr" / "lib"
    for lib in sorted(usr_lib.glob("*/systemd/libsystemd-shared-*.so")) + sorted(
        usr_lib.glob("systemd/libsystemd-shared-*.so")
    ):
        match = re.fullmatch(r"libsystemd-shared-(\d+)\.so", lib.name)
        if match:
            return int(match.group(1))
    raise RuntimeError(f"{root}: no libsystemd-shared-NNN.so, is it a systemd root?")


class NotReady(RuntimeError):
    """Not there yet; wait_for tries again."""


def _not_a_container_init(pid: int) -> str | None:
    """Why ``pid`` is not a container's systemd (a wrong one would target this host), or None."""
    if pid in (1, os.getpid()):
        return f"pid {pid} is ours"
    try:
        for ns in ("pid", "mnt"):
            if os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/self/ns/{ns}"):
                return f"pid {pid} shares our {ns} namespace"
        theirs, ours = os.stat(f"/proc/{pid}/root"), os.stat("/")
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            return f"pid {pid} has our root directory"
        if Path(f"/proc/{pid}/comm").read_text().strip() != "systemd":
            return f"pid {pid} is not systemd"
    except OSError as exc:
        return f"pid {pid} cannot be inspected: {exc}"
    return None


@dataclass
class Container:
    name: str
    netns: str
    address: str
    nspawn: subprocess.Popen[bytes]
    log: Path
    _leader: int | None = None

    @property
    def leader(self) -> int:
        """The container's PID 1, as seen from the host; checked before every use."""
        if self.nspawn.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{self.name}: systemd-nspawn exited ({self.nspawn.returncode}):\n{tail}"
            )
        if self._leader is not None:
            problem = _not_a_container_init(self._leader)
            if problem:
                raise RuntimeError(f"{self.name}: leader {problem}")
            return self._leader
        # While it boots, nspawn's child is first a helper of nspawn's own, then the
        # container's init: accept a pid only once it passes every check.
        children = sh(["pgrep", "-P", str(self.nspawn.pid)], check=False).stdout.split()
        if len(children) != 1:
            raise NotReady(f"{self.name}: nspawn has children {children}, not one")
        problem = _not_a_container_init(int(children[0]))
        if problem:
            raise NotReady(f"{self.name}: {problem}")
        self._leader = int(children[0])
        return self._leader

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        """Run a command inside the container (all its namespaces); return stdout."""
        return sh(
            ["nsenter", "-t", str(self.leader), "-a", *cmd], check=check, timeout=timeout
        ).stdout

    def path(self, inside: str) -> Path:
        """A path of the container's file system, reachable from the host."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "-p", prop, "--value", unit).strip()


@dataclass
class PlaybookRun:
    rc: int
    output: str
    recap: dict[str, dict[str, int]]
    seconds: float

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap.items()}

    def failed_hosts(self) -> list[str]:
        return [
            host for host, counts in self.recap.items() if counts["failed"] or counts["unreachable"]
        ]


_RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.MULTILINE)


@dataclass
class Fleet:
    """A container per entry of ``roots`` (name -> root file system), plus a controller."""

    roots: Mapping[str, Path]
    workdir: Path
    run_id: str
    binds: Sequence[tuple[Path, str]] = ()
    containers: dict[str, Container] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = list(self.roots)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = self.workdir / "id_ed25519"
        self.controller_ns = f"ds{self.run_id}-ctl"
        self.bridge_ns = f"ds{self.run_id}-br"

    # -- state for run.sh's trap ---------------------------------------------------------

    def _remember(self, kind: str, value: str | int) -> None:
        with open(self.workdir / kind, "a") as handle:
            handle.write(f"{value}\n")

    # -- bring-up ------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        net = _free_subnet()
        hosts = list(net.hosts())
        self.controller_address = str(hosts[9])
        addresses = {name: str(hosts[10 + i]) for i, name in enumerate(self.names)}
        self._network(net, addresses)
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "distsync-test", "-f", self.key])
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(Path(f"{self.key}.pub").read_text())
        authorized.chmod(0o600)
        for name in self.names:
            self._boot(name, addresses[name], authorized)
        for container in self.containers.values():
            wait_for(
                f"{container.name} to finish booting",
                lambda c=container: (
                    c.run("systemctl", "is-system-running", check=False).strip()
                    in ("running", "degraded")
                ),
                timeout=60,
            )
            wait_for(
                f"ssh on {container.name}",
                lambda c=container: self.ssh(c, "true", check=False).returncode == 0,
                timeout=60,
                every=0.5,
            )
        print(f"{len(self.names)} containers booted, ssh up: {time.monotonic() - started:.1f} s")

    def _network(self, net: ipaddress.IPv4Network, addresses: dict[str, str]) -> None:
        prefix = net.prefixlen
        self._add_netns(self.bridge_ns)
        ip_br = ["ip", "-n", self.bridge_ns]
        sh([*ip_br, "link", "set", "lo", "up"])
        sh([*ip_br, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])
        sh([*ip_br, "link", "set", "br0", "up"])
        ends = [(self.controller_ns, self.controller_address)] + [
            (f"ds{self.run_id}-{name}", addresses[name]) for name in self.names
        ]
        for index, (ns, address) in enumerate(ends):
            self._add_netns(ns)
            port = f"port{index}"
            # Created inside the bridge's namespace, the far end moved straight into the
            # peer's: no interface ever exists in the host namespace, even for a moment.
            sh([*ip_br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            sh([*ip_br, "link", "set", port, "master", "br0", "up"])
            sh(["ip", "-n", ns, "addr", "add", f"{address}/{prefix}", "dev", "eth0"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _add_netns(self, ns: str) -> None:
        sh(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        self._remember("netns", ns)

    def _boot(self, name: str, address: str, authorized: Path) -> None:
        ns = f"ds{self.run_id}-{name}"
        etc_hosts = self.workdir / f"hosts.{name}"
        lines = [
            "127.0.0.1 localhost",
            f"127.0.1.1 {name}",
            f"{self.controller_address} controller",
        ]
        etc_hosts.write_text("\n".join(lines) + "\n")
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("")
        log = self.workdir / f"console.{name}.log"
        cmd = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.roots[name]}",
            f"--machine={name}",
            "--boot",
            # No systemd (so no machined, no system bus) on the host: required here.
            "--register=no",
            "--keep-unit",
            # A fresh, throw-away upper layer per boot: the cached root is never written.
            "--volatile=overlay",
            f"--network-namespace-path=/run/netns/{ns}",
            "--resolv-conf=off",
            "--link-journal=no",
            "--console=read-only",
            f"--bind-ro={authorized}:/root/.ssh/authorized_keys",
            f"--bind-ro={etc_hosts}:/etc/hosts",
            f"--bind-ro={resolv}:/etc/resolv.conf",
            *(f"--bind-ro={src}:{dest}" for src, dest in self.binds),
        ]
        env = dict(os.environ)
        if systemd_version(self.roots[name]) >= 256:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._remember("pids", proc.pid)
        container = Container(name, ns, address, proc, log)
        self.containers[name] = container
        wait_for(f"{name}'s init to start", lambda: container.leader, timeout=30)

    # -- use -----------------------------------------------------------------------------

    def ssh_args(self) -> list[str]:
        return [
            "-i",
            str(self.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
        ]

    def ssh(self, container: Container, *cmd: str, check: bool = True):  # type: ignore[no-untyped-def]
        return sh(
            [
                "ip",
                "netns",
                "exec",
                self.controller_ns,
                "ssh",
                *self.ssh_args(),
                f"root@{container.address}",
                *cmd,
            ],
            check=check,
            timeout=30,
        )

    def ansible_env(self) -> dict[str, str]:
        collections = self.workdir / "collections"
        link = collections / "ansible_collections" / "distsync" / "core"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(REPO)
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(collections),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_LOCAL_TEMP=str(self.workdir / "ansible-tmp"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.workdir / "cp"),
            # Short: the masters end soon after a run even if close() never gets to them.
            ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=20s",
            # One ssh round trip per task instead of several (root needs no tty for sudo).
            ANSIBLE_PIPELINING="1",
        )
        env.pop("ANSIBLE_CONFIG", None)
        return env

    def playbook(
        self, inventory: Path, playbook: Path, *args: str, timeout: float = 900
    ) -> PlaybookRun:
        """ansible-playbook from the controller namespace; never raises on a failed play."""
        cmd = [
            "ip",
            "netns",
            "exec",
            self.controller_ns,
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            str(inventory),
            str(playbook),
            *args,
        ]
        started = time.monotonic()
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.ansible_env(),
            cwd=REPO,
            check=False,
        )
        seconds = time.monotonic() - started
        output = proc.stdout + proc.stderr
        recap = {
            host: {k: int(v) for k, v in (pair.split("=") for pair in counts.split())}
            for host, counts in _RECAP.findall(output)
        }
        print(f"{' '.join(args) or 'run'} of {playbook.name}: {seconds:.0f} s")
        return PlaybookRun(proc.returncode, output, recap, seconds)

    # -- tear-down -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every container and remove every namespace; never raises."""
        for container in self.containers.values():
            proc = container.nspawn
            if proc.poll() is None:
                # nspawn turns SIGTERM into a clean shutdown of the container's systemd.
                proc.send_signal(signal.SIGTERM)
        for container in self.containers.values():
            proc = container.nspawn
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        for ns in reversed(self.namespaces):
            # Whatever still runs in our namespaces (ssh control masters) was started by us.
            pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
