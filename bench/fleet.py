#!/usr/bin/env python3
"""Fleet benchmark: S3+BitTorrent against HTTPS-only, and both against the Kumar-Ross bound.

    sudo .venv/bin/python bench/fleet.py --nodes 6 --size 128 --rate 100

(results and what they mean: docs/benchmarks.md, "Fleet (BitTorrent)"). It measures the
product as a user runs it: ``distsync daemon`` processes with ``Storage = "S3+BitTorrent"``
and the default ``Torrent*`` settings, ``PollInterval = 2``, and ``distsync upload``.

It builds a private network: a bridge in a network namespace of its own, a real S3 server
(ministack) in another, and N daemons each in its own namespace, every link shaped with
``tc tbf`` to ``--rate`` Mbit/s in both directions (S3's link to ``--s3-rate``). Nothing gets
an address in the host namespace, the subnet is one the host does not use, and names carry
a per-run id. Then, twice with fresh daemons (the swarm, then ``Storage = "S3"``, the
HTTPS-only baseline): upload a random artifact from inside the S3 namespace and time from
the announce until every node has installed it (the daemons' own "installed" log lines:
verified, decrypted, fsynced, renamed), counting the bytes S3's link sent. It prints

* S3 egress / artifact size (bytes the S3 namespace sent on the wire, headers included),
* time from the announce until the last node installed it,
* the Kumar-Ross lower bound ``max(F/u_s, F/d_min, N*F/(u_s + sum(u_i)))`` for the
  configured rates and its ratio,
* the host's load and where its CPU went (per daemon, ministack, the rest), so a run that
  was CPU-bound says so,

and ends with one summary line (``fleet: ... egress_ratio=X bound_ratio=Y ...``). Every
process and namespace it made is removed on exit, failure, Ctrl-C or ``--timeout``. A
benchmark, not a test: it checks only that every node installed the exact bytes. Needs root,
iproute2 and tc.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import process_tree_cpu

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MiB = 1 << 20
CHUNK = 1 << 20  # the default ChunkSize
S3_PORT = 9000
ACCESS_KEY = "AKIABENCHFLEET000000"
SECRET_KEY = "bench-secret-key-not-real"
BUCKET = "distsync-bench-fleet"
CANDIDATE_SUBNETS = [f"10.214.{n}.0/24" for n in range(0, 250, 7)]
_INSTALLED = re.compile(r"^(\S+ \S+) distsync INFO installed app\.bin ", re.MULTILINE)


def run(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 that overlaps nothing the host namespace has an address or a route for."""
    used = []
    for line in json.loads(run("ip", "-4", "-j", "addr")):
        for item in line.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{item['local']}/{item['prefixlen']}", False))
    for route in json.loads(run("ip", "-4", "-j", "route")):
        if route["dst"] != "default":
            used.append(ipaddress.ip_network(route["dst"], False))
    for text in CANDIDATE_SUBNETS:
        net = ipaddress.ip_network(text)
        if not any(net.overlaps(other) for other in used):
            return net
    raise RuntimeError("no free subnet among the candidates")


@dataclass
class Lab:
    """Namespaces, links and processes of one run; ``close`` undoes all of it."""

    nodes: int
    rate: float
    s3_rate: float
    subnet: ipaddress.IPv4Network
    work: Path
    tag: str = field(default_factory=lambda: f"dsf{os.urandom(3).hex()}")
    namespaces: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def bridge_ns(self) -> str:
        return f"{self.tag}-br"

    def ns(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def ip(self, index: int) -> str:
        return str(self.subnet.network_address + index)

    @property
    def s3_ip(self) -> str:
        return self.ip(2)

    def node_ip(self, i: int) -> str:
        return self.ip(10 + i)

    def build(self) -> None:
        self._add_ns(self.bridge_ns)
        run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        self._attach("s3", self.s3_ip, self.s3_rate)
        for i in range(self.nodes):
            self._attach(f"n{i}", self.node_ip(i), self.rate)

    def _add_ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _attach(self, name: str, address: str, rate: float) -> None:
        """A namespace with eth0 on the bridge, shaped to ``rate`` both ways."""
        ns = self.ns(name)
        self._add_ns(ns)
        port = f"p-{name}"
        # Made inside the bridge's namespace: the host namespace never sees either end.
        run("ip", "-n", self.bridge_ns, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", ns)  # fmt: skip
        run("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", ns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        burst = max(64 << 10, int(rate * 1e6 / 8 / 100))  # >= rate/HZ at any HZ
        shape = ["root", "tbf", "rate", f"{rate}mbit", "burst", str(burst), "latency", "50ms"]
        # eth0's queue shapes what the namespace sends (its upload), the bridge port's queue
        # what it receives (its download).
        run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", *shape)
        run("ip", "netns", "exec", self.bridge_ns, "tc", "qdisc", "add", "dev", port, *shape)

    def spawn(self, label: str, ns: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        with open(log, "ab") as out:
            self.procs[label] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(ns), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def exec(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns(name), *argv],
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"{argv[:4]} in {name} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def s3_tx_bytes(self) -> int:
        stats = json.loads(run("ip", "-n", self.ns("s3"), "-s", "-j", "link", "show", "eth0"))
        return int(stats[0]["stats64"]["tx"]["bytes"])

    def stop(self, labels: list[str]) -> None:
        procs = [self.procs.pop(label) for label in labels if label in self.procs]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def close(self) -> None:
        self.stop(list(self.procs))
        for name in reversed(self.namespaces):  # deleting a namespace deletes its links
            run("ip", "netns", "del", name, check=False)


def config_text(lab: Lab, home: Path, secret: str, prefix: str, storage: str, args: Any) -> str:
    keys = "".join(f"{item}\n" for item in args.config_key)
    return keys + (
        f'SharedSecret = "{secret}"\nStorageBucket = "{BUCKET}"\nStorage = "{storage}"\n'
        f'Prefix = "{prefix}"\nOutputDir = "{home}/out"\nStateDir = "{home}/state"\n'
        f"PollInterval = {args.poll_interval}\nPollJitter = {args.poll_jitter}\n"
        f'[AwsCreds]\nAccessKey = "{ACCESS_KEY}"\nSecretKey = "{SECRET_KEY}"\n'
        f'Endpoint = "http://{lab.s3_ip}:{S3_PORT}"\n'
    )


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def start_s3(lab: Lab, env: dict[str, str]) -> None:
    """ministack: moto answers every ranged GET at the cost of reading the whole object (10
    requests/s whatever the range), which would measure moto instead of the swarm."""
    data = lab.work / "s3-data"
    data.mkdir()
    server_env = dict(env, BIND_HOST=lab.s3_ip, GATEWAY_PORT=str(S3_PORT), S3_DATA_DIR=str(data))
    command = [str(Path(PY).with_name("ministack"))]
    lab.spawn("s3", "s3", command, lab.work / "s3.log", server_env)
    script = (
        "import boto3,time\n"
        f"c=boto3.client('s3',endpoint_url='http://{lab.s3_ip}:{S3_PORT}',"
        f"aws_access_key_id='{ACCESS_KEY}',aws_secret_access_key='{SECRET_KEY}',"
        "region_name='us-east-1')\n"
        "for _n in range(200):\n"
        "    try:\n"
        f"        c.create_bucket(Bucket='{BUCKET}'); break\n"
        "    except Exception: time.sleep(0.1)\n"
        "else: raise SystemExit('S3 server did not come up')\n"
    )
    lab.exec("s3", [PY, "-c", script], env, timeout=60)


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class CpuMeter:
    """Host CPU and each benchmark process's CPU over a window (from /proc)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.start = time.monotonic()
        self.host = _cpu_ticks()
        self.procs = {label: process_tree_cpu(p.pid) for label, p in lab.procs.items()}

    def report(self) -> str:
        seconds = max(time.monotonic() - self.start, 1e-6)
        busy, total = _cpu_ticks()
        host = (busy - self.host[0]) / max(total - self.host[1], 1)
        used = {
            label: process_tree_cpu(p.pid) - self.procs.get(label, 0.0)
            for label, p in self.lab.procs.items()
        }
        daemons = {label: s for label, s in used.items() if label.startswith("n")}
        cores = os.cpu_count() or 1
        return (
            f"CPU over {seconds:.1f} s: host {100 * host:.0f} % busy of {cores} cores; "
            f"ministack {used.get('s3', 0.0):.1f} s, daemons "
            f"{sum(daemons.values()):.1f} s (max {max(daemons.values(), default=0):.1f} s each)"
        )


class Tracer(threading.Thread):
    """Samples the S3 link's and node 0's counters every 0.5 s, for ``--trace``."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.samples: list[tuple[float, int, int, int, int, int]] = []
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            node = json.loads(
                run("ip", "-n", self.lab.ns("n0"), "-s", "-j", "link", "show", "eth0")
            )
            stats = node[0]["stats64"]
            busy, total = _cpu_ticks()
            self.samples.append(
                (time.time(), self.lab.s3_tx_bytes(), stats["rx"]["bytes"], stats["tx"]["bytes"],
                 busy, total)
            )  # fmt: skip

    def report(self, announced: float) -> None:
        self.stopped.set()
        self.join()
        print("    t(s)  S3 tx  n0 rx  n0 tx (Mbit/s)  CPU busy (all cores, whole host)")
        for before, after in zip(self.samples, self.samples[1:]):
            span = after[0] - before[0]
            rates = [(after[i] - before[i]) * 8 / span / 1e6 for i in (1, 2, 3)]
            cpu = 100 * (after[4] - before[4]) / max(after[5] - before[5], 1)
            line = " ".join(f"{r:6.1f}" for r in rates)
            print(f"  {after[0] - announced:6.1f} {line} {cpu:10.0f} %")


@dataclass
class Outcome:
    egress: float  # S3 bytes sent / object size
    seconds: float  # announce -> last install
    per_node: list[float]
    object_size: int
    cpu: str


def run_round(
    lab: Lab, mode: str, args: argparse.Namespace, env: dict[str, str], secret: str
) -> Outcome:
    """Fresh daemons and a fresh prefix; upload once; wait for every install."""
    from distsync.crypto.stream import ciphertext_size

    storage = "S3" if mode == "https" else "S3+BitTorrent"
    prefix = f"bench/{mode}-{int(time.time())}/"
    homes = [lab.work / mode / f"n{i}" for i in range(lab.nodes)]
    labels = [f"n{i}" for i in range(lab.nodes)]
    # A fleet's daemons were started at different times, so their polls are spread over the
    # interval: start them at random moments within one (all at once would poll in lockstep).
    starts = sorted(random.uniform(0, args.poll_interval) for _home in homes)
    began = time.monotonic()
    for label, home, start in zip(labels, homes, starts):
        cfg = write_config(
            home / "distsync.toml", config_text(lab, home, secret, prefix, storage, args)
        )
        time.sleep(max(0.0, began + start - time.monotonic()))
        daemon = [PY, "-m", "distsync", "daemon", "-c", str(cfg)]
        lab.spawn(label, label, daemon, home / "daemon.log", dict(env, HOME=str(home)))
    # Ready: watching, and (the swarm) its peer record in the bucket, written by its first cycle.
    ready = "peer record published" if mode == "torrent" else "watching"
    deadline = time.monotonic() + 60
    for home in homes:
        while ready not in _read(home / "daemon.log"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{home.name} did not start:\n{_read(home / 'daemon.log')}")
            time.sleep(0.1)

    artifact = lab.work / mode / "app.bin"
    digest = hashlib.sha256()
    with open(artifact, "wb") as out:
        for _unused in range(args.size):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)
    up = lab.work / mode / "uploader"
    up_cfg = write_config(up / "distsync.toml", config_text(lab, up, secret, prefix, storage, args))
    sent_before = lab.s3_tx_bytes()
    tracer = Tracer(lab) if args.trace else None
    cpu = CpuMeter(lab)
    # `distsync upload` prints its line once the manifest is in the log and the marker
    # rewritten: that moment is the announce.
    upload = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("s3"), PY, "-m", "distsync", "upload", "-c", str(up_cfg),
         str(artifact)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(env, HOME=str(up)),
    )  # fmt: skip
    assert upload.stdout is not None
    line = upload.stdout.readline()
    announced = time.time()
    if upload.wait(300) or not line:
        raise RuntimeError(f"upload failed: {upload.stderr.read() if upload.stderr else ''!r}")

    deadline = time.monotonic() + args.round_timeout
    targets = [home / "out" / "app.bin" for home in homes]
    while not all(_installed_at(home) for home in homes):
        if time.monotonic() > deadline:
            missing = [home.name for home in homes if not _installed_at(home)]
            raise RuntimeError(f"{mode}: not installed on {missing} in {args.round_timeout} s")
        time.sleep(0.05)
    cpu_report = cpu.report()
    if tracer is not None:
        tracer.report(announced)
    per_node = [(_installed_at(home) or 0.0) - announced for home in homes]
    sent = lab.s3_tx_bytes() - sent_before
    for target in targets:
        if _sha256(target) != digest.hexdigest():
            raise RuntimeError(f"{target} differs from the artifact")
    lab.stop(labels)
    object_size = ciphertext_size(args.size * MiB, CHUNK)
    return Outcome(sent / object_size, max(per_node), per_node, object_size, cpu_report)


def _installed_at(home: Path) -> float | None:
    """When the daemon logged the install (after fsync and rename), as a Unix time."""
    found = _INSTALLED.search(_read(home / "daemon.log"))
    if found is None:
        return None
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def kumar_ross(size_bytes: int, nodes: int, rate: float, s3_rate: float) -> tuple[float, ...]:
    """(F/u_s, F/d_min, N*F/(u_s + sum u_i)) in seconds for the configured rates (Mbit/s)."""
    bits = size_bytes * 8
    u_s, d_min, u_i = s3_rate * 1e6, rate * 1e6, rate * 1e6
    return bits / u_s, bits / d_min, nodes * bits / (u_s + nodes * u_i)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the benchmark took longer than --timeout {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM ends the run through the same clean-up as Ctrl-C."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--size", type=int, default=128, help="artifact size in MiB")
    parser.add_argument("--rate", type=float, default=100, help="Mbit/s on every node's link")
    parser.add_argument("--s3-rate", type=float, help="Mbit/s on S3's link (default: --rate)")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--poll-jitter", type=float, default=0.0)
    parser.add_argument(
        "--config-key", action="append", default=[], metavar="KEY=VALUE",
        help="a TOML line added to every config, e.g. TorrentS3Readers=4 (default: none)",
    )  # fmt: skip
    parser.add_argument("--skip-baseline", action="store_true", help="swarm round only")
    parser.add_argument("--round-timeout", type=float, default=900)
    parser.add_argument("--timeout", type=float, default=2400, help="for the whole run")
    parser.add_argument(
        "--workdir", type=Path, help="where state, copies and output go (default: a fresh "
        "directory on /dev/shm: one disk shared by every node would measure the disk)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--trace", action="store_true", help="print link rates over time")
    args = parser.parse_args()
    args.s3_rate = args.s3_rate or args.rate
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        print("fleet.py needs root, iproute2 and tc (network namespaces)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "python"))
    from distsync.crypto.secret import generate_secret

    secret = generate_secret()
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), PYTHONUNBUFFERED="1")
    base = args.workdir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    work = Path(tempfile.mkdtemp(prefix="distsync-fleet-", dir=base))
    lab = Lab(args.nodes, args.rate, args.s3_rate, free_subnet(), work)
    signal.signal(signal.SIGTERM, interrupted)
    results: dict[str, Outcome] = {}
    load_before = load_average()
    try:
        with time_limit(args.timeout):
            lab.build()
            start_s3(lab, env)
            print(
                f"fleet: {args.nodes} nodes on {lab.subnet} (bridge, S3 and every node in "
                f"namespaces of their own, run id {lab.tag}), tbf {args.rate:g} Mbit/s on every "
                f"node's link and {args.s3_rate:g} on S3's, both ways; artifact {args.size} MiB; "
                f"PollInterval {args.poll_interval:g} s, PollJitter {args.poll_jitter:g} s; "
                f"extra keys: {', '.join(args.config_key) or 'none'}; work in {work}; "
                f"load average {load_before}",
                flush=True,
            )
            modes = ["torrent"] if args.skip_baseline else ["torrent", "https"]
            for mode in modes:
                results[mode] = got = run_round(lab, mode, args, env, secret)
                print(
                    f"  {mode:8s} egress {got.egress:5.2f} x F, all installed in "
                    f"{got.seconds:6.2f} s (first {min(got.per_node):.2f} s); {got.cpu}",
                    flush=True,
                )
    finally:
        lab.close()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    swarm = results["torrent"]
    terms = kumar_ross(swarm.object_size, args.nodes, args.rate, args.s3_rate)
    bound = max(terms)
    print(
        f"Kumar-Ross bound: max(F/u_s={terms[0]:.2f} s, F/d_min={terms[1]:.2f} s, "
        f"N*F/(u_s+sum u_i)={terms[2]:.2f} s) = {bound:.2f} s "
        f"(F = {swarm.object_size} bytes of ciphertext)"
    )
    print(f"{'':14s}{'S3 egress / F':>15s}{'all installed':>16s}{'/ bound':>10s}")
    for mode, label in (("torrent", "S3+BitTorrent"), ("https", "HTTPS only")):
        if mode in results:
            got = results[mode]
            print(f"{label:14s}{got.egress:15.2f}{got.seconds:14.2f} s{got.seconds / bound:10.2f}")
    https = results.get("https")
    versus = (
        f" https_egress={https.egress:.2f} https_bound_ratio={https.seconds / bound:.2f}"
        if (https)
        else ""
    )
    print(
        f"fleet nodes={args.nodes} size={args.size}MiB rate={args.rate:g}Mbit/s "
        f"s3_rate={args.s3_rate:g}Mbit/s: egress_ratio={swarm.egress:.2f} "
        f"bound_ratio={swarm.seconds / bound:.2f}{versus} "
        f"load={load_before}->{load_average()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
