#!/usr/bin/env python3
"""Fleet benchmark: S3+BitTorrent against HTTPS-only, and both against the Kumar-Ross bound.

    sudo .venv/bin/python bench/fleet.py --nodes 8 --size 128 --rate 40

(results and what they mean: docs/benchmarks.md, "Fleet (BitTorrent)"). ``--trace`` prints
S3's and node 0's link rates and the host's CPU every 0.5 s; ``--real-daemon`` runs
``distsync daemon`` itself once docs/patches/torrent-*.diff are applied.

Builds a private network: a bridge in a network namespace of its own, a real S3 server
(ministack) in another, and N daemons each in its own namespace, every link shaped with
``tc tbf`` to ``--rate`` Mbit/s in both directions (S3's link as well). Nothing gets an
address in the host namespace, and the subnet is one the host does not use. Then, twice with
fresh daemons: upload a random artifact from inside the S3 namespace and time until every node
has installed it (verified, decrypted, renamed into place), counting the bytes S3's link sent.
It prints

* S3 egress / artifact size (bytes the S3 namespace sent on the wire, headers included),
* time from the announce until the last node installed it,
* the Kumar-Ross lower bound ``max(F/u_s, F/d_min, N*F/(u_s + sum(u_i)))`` and the ratio,

for the swarm and for the HTTPS-only baseline; the last line is
``egress_ratio=X bound_ratio=Y`` for the swarm. Every process and namespace it made is torn
down on exit, failure, Ctrl-C or ``--timeout``. A benchmark, not a test: it checks only that
every node installed the exact bytes. Needs root, iproute2 and tc.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MiB = 1 << 20
S3_PORT = 9000
ACCESS_KEY = "AKIABENCHFLEET000000"
SECRET_KEY = "bench-secret-key-not-real"
BUCKET = "distsync-bench-fleet"
CANDIDATE_SUBNETS = [f"10.214.{n}.0/24" for n in range(0, 250, 7)]


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
    subnet: ipaddress.IPv4Network
    work: Path
    tag: str = field(default_factory=lambda: f"dsf{os.getpid() % 100000}")
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

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
        self._attach("s3", self.s3_ip)
        for i in range(self.nodes):
            self._attach(f"n{i}", self.node_ip(i))

    def _add_ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _attach(self, name: str, address: str) -> None:
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
        burst = max(64 << 10, int(self.rate * 1e6 / 8 / 100))  # >= rate/HZ at any HZ
        shape = ["root", "tbf", "rate", f"{self.rate}mbit", "burst", str(burst),
                 "latency", "50ms"]  # fmt: skip
        # eth0's queue shapes what the namespace sends (its upload), the bridge port's queue
        # what it receives (its download).
        run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", *shape)
        run("ip", "netns", "exec", self.bridge_ns, "tc", "qdisc", "add", "dev", port, *shape)

    def spawn(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        with open(log, "ab") as out:
            self.procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", self.ns(name), *argv],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
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

    def stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
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
        self.stop(self.procs)
        for name in reversed(self.namespaces):  # deleting a namespace deletes its links
            run("ip", "netns", "del", name, check=False)


def config_text(lab: Lab, home: Path, secret: str, prefix: str) -> str:
    return (
        f'SharedSecret = "{secret}"\nStorageBucket = "{BUCKET}"\nStorage = "S3+BitTorrent"\n'
        f'Prefix = "{prefix}"\nOutputDir = "{home}/out"\nStateDir = "{home}/state"\n'
        # Fast polls: the figure is the transfer, not the (configurable) notice delay.
        "PollInterval = 0.25\nPollJitter = 0.1\n"
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
    lab.spawn("s3", command, lab.work / "s3.log", server_env)
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


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@dataclass
class Outcome:
    egress: float  # S3 bytes sent / object size
    seconds: float  # announce -> last install
    per_node: list[float]
    object_size: int


def run_round(
    lab: Lab, mode: str, size_mib: int, env: dict[str, str], secret: str, args: argparse.Namespace
) -> Outcome:
    """Fresh daemons and a fresh prefix; upload once; wait for every install."""
    prefix = f"bench/{mode}-{int(time.time())}"
    homes = [lab.work / mode / f"n{i}" for i in range(lab.nodes)]
    flags = ["--https-only"] if mode == "https" else [
        "--port", "6881", "--seed-seconds", "600",
        "--web-seed-delay", str(args.web_seed_delay), "--s3-readers", str(args.s3_readers),
    ]  # fmt: skip
    # The same settings as config keys, for `distsync daemon` itself (--real-daemon).
    keys = (
        f"TorrentPort = 6881\nTorrentWebSeedDelay = {args.web_seed_delay}\n"
        f"TorrentS3Readers = {args.s3_readers}\n"
    )
    storage = "S3" if mode == "https" else "S3+BitTorrent"
    round_procs_from = len(lab.procs)
    for i, home in enumerate(homes):
        text = config_text(lab, home, secret, prefix)
        if args.real_daemon:
            text = keys + text.replace('"S3+BitTorrent"', f'"{storage}"')
            argv = [PY, "-m", "distsync", "daemon", "-c"]
        else:
            argv = [PY, "-m", "distsync.transfer.torrent", "daemon", *flags, "-c"]
        cfg = write_config(home / "distsync.toml", text)
        lab.spawn(f"n{i}", [*argv, str(cfg)], home / "daemon.log", env)
    deadline = time.monotonic() + 60
    for home in homes:  # "watching" comes after the peer record is written
        while "watching" not in _read(home / "daemon.log"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{home.name} did not start:\n{_read(home / 'daemon.log')}")
            time.sleep(0.1)

    artifact = lab.work / mode / "app.bin"
    digest = hashlib.sha256()
    with open(artifact, "wb") as out:
        for _unused in range(size_mib):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)
    up = write_config(
        lab.work / mode / "up.toml", config_text(lab, lab.work / mode, secret, prefix)
    )
    sent_before = lab.s3_tx_bytes()
    tracer = Tracer(lab) if args.trace else None
    upload = [PY, "-m", "distsync.transfer.torrent", "upload", "-c", str(up), str(artifact)]
    facts = json.loads(lab.exec("s3", upload, env, timeout=300).strip().splitlines()[-1])
    announced = float(facts["announced_at"])

    deadline = time.monotonic() + args.round_timeout
    targets = [home / "out" / "app.bin" for home in homes]
    while not all(t.exists() for t in targets):
        if time.monotonic() > deadline:
            missing = [t.parent.parent.name for t in targets if not t.exists()]
            raise RuntimeError(f"{mode}: not installed on {missing} in {args.round_timeout} s")
        time.sleep(0.05)
    if tracer is not None:
        tracer.report(announced)
    per_node = [t.stat().st_mtime - announced for t in targets]
    sent = lab.s3_tx_bytes() - sent_before
    for target in targets:
        if _sha256(target) != digest.hexdigest():
            raise RuntimeError(f"{target} differs from the artifact")
    lab.stop(lab.procs[round_procs_from:])
    del lab.procs[round_procs_from:]
    object_size = int(facts["object_size"])
    return Outcome(sent / object_size, max(per_node), per_node, object_size)


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


def kumar_ross(size_bytes: int, nodes: int, rate_mbit: float) -> tuple[float, float, float]:
    """(F/u_s, F/d_min, N*F/(u_s + sum u_i)) in seconds; every link runs at ``rate_mbit``."""
    bits = size_bytes * 8
    rate = rate_mbit * 1e6
    return bits / rate, bits / rate, nodes * bits / (rate + nodes * rate)


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
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="artifact size in MiB")
    # 40: a two-core host cannot play eight 100 Mbit/s servers (it runs out of CPU, not links).
    parser.add_argument("--rate", type=float, default=40, help="Mbit/s on every link")
    parser.add_argument("--s3-readers", type=int, default=8)
    parser.add_argument("--web-seed-delay", type=float, default=30)
    parser.add_argument("--skip-baseline", action="store_true", help="swarm round only")
    parser.add_argument("--round-timeout", type=float, default=600)
    parser.add_argument("--timeout", type=float, default=1800, help="for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--trace", action="store_true", help="print link rates over time")
    parser.add_argument(
        "--real-daemon",
        action="store_true",
        help="run `distsync daemon` with Torrent* config keys (needs docs/patches/torrent-*)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        print("fleet.py needs root, iproute2 and tc (network namespaces)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "python"))
    from distsync.crypto.secret import generate_secret

    secret = generate_secret()
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), PYTHONUNBUFFERED="1")
    work = Path(tempfile.mkdtemp(prefix="distsync-fleet-"))
    lab = Lab(args.nodes, args.rate, free_subnet(), work)
    signal.signal(signal.SIGTERM, interrupted)
    results: dict[str, Outcome] = {}
    try:
        with time_limit(args.timeout):
            lab.build()
            start_s3(lab, env)
            print(
                f"fleet: {args.nodes} nodes on {lab.subnet} (bridge, S3 and every node in "
                f"namespaces of their own), {args.rate:g} Mbit/s tbf on every link both ways, "
                f"artifact {args.size} MiB",
                flush=True,
            )
            modes = ["torrent"] if args.skip_baseline else ["torrent", "https"]
            for mode in modes:
                results[mode] = run_round(lab, mode, args.size, env, secret, args)
                got = results[mode]
                print(
                    f"  {mode:8s} egress {got.egress:5.2f} x F, all installed in "
                    f"{got.seconds:6.2f} s (first {min(got.per_node):.2f} s)",
                    flush=True,
                )
    finally:
        lab.close()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    swarm = results["torrent"]
    terms = kumar_ross(swarm.object_size, args.nodes, args.rate)
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
    print(f"egress_ratio={swarm.egress:.2f} bound_ratio={swarm.seconds / bound:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
