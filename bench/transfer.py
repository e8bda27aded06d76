#!/usr/bin/env python3
"""Benchmark distsync's transfers against plain boto3 on the same S3 server, in the same run.

    .venv/bin/python bench/transfer.py            # 1 GiB, localbucket and ministack, best of 3

For each server (localbucket: files on /dev/shm; ministack: objects in memory), on loopback,
with a random artifact on /dev/shm, it times whole processes, so start-up is included and
each run's peak RSS and CPU time are its own (wait4):

* ``distsync upload`` (encrypt as a stream into a parallel multipart upload, append the
  manifest) against boto3 ``upload_file`` of the plaintext (default TransferConfig);
* ``distsync daemon --once`` with a fresh OutputDir and StateDir (notice the upload, ranged
  GETs, verify and decrypt every chunk, check the signed manifest's digest of the chunk tags,
  fsync, rename) against boto3 ``download_file``.

The configs are signed, as ``distsync setup`` writes them: CI's holds the SigningKey, the
server's trusts its public key.

Runs alternate baseline and ours; every download is checked byte for byte outside the timing.
Then the same with the client processes under ``taskset -c 0`` (the server keeps every core).
The last lines are the summary: ratios ours / boto3 (throughput; best of the runs, the median
beside it), peak RSS, the goals of issue 13 and the load average. moto is not offered: it
copies the whole object for every ranged GET, so at 1 GiB it, not the client, is measured.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchlib import (
    ONE_CORE,
    MiB,
    Row,
    Run,
    load,
    measure,
    process_tree_cpu,
    workdir_base,
    write_random,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tests" / "system"))

from s3server import ACCESS_KEY, SECRET_KEY, free_port, s3_client  # noqa: E402

BUCKET = "distsync-bench"
GOALS = {"upload": 1.0, "download": 0.9}
RSS_GOAL = 150.0

BOTO_CHILD = """\
import sys, boto3
from botocore.config import Config
op, endpoint, bucket, key, path = sys.argv[1:6]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
if op == "upload":
    client.upload_file(path, bucket, key)
else:
    client.download_file(bucket, key, path)
"""


class Server:
    """An S3 server process on a free loopback port; ``command`` gets the port."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        data = workdir / f"{name}-data"
        data.mkdir()
        exe = Path(sys.executable).with_name(name)
        env = dict(os.environ)
        if name == "localbucket":
            argv = [str(exe), "--host", "127.0.0.1", "--port", str(self.port), str(data)]
        else:
            argv = [str(exe)]
            env.update(BIND_HOST="127.0.0.1", GATEWAY_PORT=str(self.port), LOG_LEVEL="WARNING")
            env.update(S3_DATA_DIR=str(data))
        self.log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{name} did not start: see {workdir / f'{name}.log'}")

    def cpu_seconds(self) -> float:
        """The server's CPU so far: whether the store, not the client, sets the pace."""
        return process_tree_cpu(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@contextlib.contextmanager
def server(name: str, workdir: Path) -> Iterator[Server]:
    running = Server(name, workdir)
    try:
        yield running
    finally:
        running.stop()


def write_configs(workdir: Path, endpoint: str) -> tuple[Path, Path]:
    """CI's config and a server's, signed as `distsync setup` makes them: the uploader holds
    the SigningKey, the server trusts its public key (so manifests carry the tags digest)."""
    from distsync.crypto.secret import generate_secret
    from distsync.crypto.signing import SigningKey, format_key

    key = SigningKey.generate()
    common = (
        f'SharedSecret = "{generate_secret()}"\nStorageBucket = "{BUCKET}"\nStorage = "S3"\n'
        f'OutputDir = "{workdir / "installed"}"\nStateDir = "{workdir / "state"}"\n'
    )
    aws = (
        f'[AwsCreds]\nAccessKey = "{ACCESS_KEY}"\nSecretKey = "{SECRET_KEY}"\n'
        f'Endpoint = "{endpoint}"\n'
    )
    upload, daemon = workdir / "distsync.toml", workdir / "distsyncd.toml"
    upload.write_text(f'{common}SigningKey = "{key.text()}"\n{aws}')
    daemon.write_text(f'{common}TrustedSigners = ["{format_key(key.public_key)}"]\n{aws}')
    for path in (upload, daemon):
        path.chmod(0o600)
    return upload, daemon


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(16 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def empty_bucket(client: object) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)  # type: ignore[attr-defined]
    for page in pages:
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])  # type: ignore[attr-defined]


def one_round(
    endpoint: str,
    configs: tuple[Path, Path],
    source: Path,
    expected: str,
    workdir: Path,
    prefix: list[str],
    server_cpu: Callable[[], float],
) -> tuple[dict[str, Run], dict[str, float]]:
    """Baseline and ours, alternating, each download checked byte for byte (not timed); also
    the server's CPU seconds during each run."""
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(REPO / "python"),
        HOME=str(workdir),
    )
    boto = [*prefix, sys.executable, "-c", BOTO_CHILD]
    ours = [*prefix, sys.executable, "-m", "distsync"]
    log = workdir / "child.log"
    plain_copy = workdir / "boto-download.bin"
    installed = workdir / "installed"
    for fresh in (installed, workdir / "state"):
        shutil.rmtree(fresh, ignore_errors=True)
    installed.mkdir()
    runs: dict[str, Run] = {}
    served: dict[str, float] = {}

    def timed(key: str, argv: list[str]) -> None:
        before = server_cpu()
        runs[key] = measure(argv, log, env)
        served[key] = server_cpu() - before

    timed("boto_up", [*boto, "upload", endpoint, BUCKET, "plain", str(source)])
    timed("ours_up", [*ours, "upload", "-c", str(configs[0]), str(source)])
    timed("boto_down", [*boto, "download", endpoint, BUCKET, "plain", str(plain_copy)])
    if sha256_of(plain_copy) != expected:
        raise SystemExit("boto3 download differs from the input")
    plain_copy.unlink()
    timed("ours_down", [*ours, "daemon", "-c", str(configs[1]), "--once"])
    if sha256_of(installed / source.name) != expected:
        raise SystemExit("distsync daemon --once installed something else than the input")
    shutil.rmtree(installed)
    return runs, served


LABELS = {
    "boto_up": "boto3 upload_file",
    "ours_up": "distsync upload",
    "boto_down": "boto3 download_file",
    "ours_down": "distsync daemon --once",
}


def measure_server(
    name: str, args: argparse.Namespace, workdir: Path, source: Path, expected: str
) -> dict[str, dict[str, Row]]:
    passes = {"all": [], "one": ONE_CORE} if args.one_core else {"all": []}
    results: dict[str, dict[str, Row]] = {}
    with server(name, workdir) as running:
        client = s3_client(running.endpoint)
        client.create_bucket(Bucket=BUCKET)
        configs = write_configs(workdir, running.endpoint)
        for cores, prefix in passes.items():
            runs: dict[str, list[Run]] = {key: [] for key in LABELS}
            served: dict[str, list[float]] = {key: [] for key in LABELS}
            before = load()
            for _ in range(args.repeat):
                empty_bucket(client)  # ministack holds objects in memory
                done, cpu = one_round(
                    running.endpoint,
                    configs,
                    source,
                    expected,
                    workdir,
                    prefix,
                    running.cpu_seconds,
                )
                for key, run in done.items():
                    runs[key].append(run)
                    served[key].append(cpu[key])
            after = load()
            results[cores] = {key: Row(LABELS[key], runs[key], before, after) for key in LABELS}
            title = f"{name}, {cores_label(cores)}"
            report(title, args.size_mib * MiB, results[cores], served)
        empty_bucket(client)
    return results


def cores_label(cores: str) -> str:
    return f"all {os.cpu_count()} cores" if cores == "all" else "clients on one core (taskset -c 0)"


def ratios(rows: dict[str, Row]) -> tuple[float, float, float, float]:
    """(upload best, upload median, download best, download median): ours / boto3 speed."""
    up = rows["boto_up"].best.seconds / rows["ours_up"].best.seconds
    down = rows["boto_down"].best.seconds / rows["ours_down"].best.seconds
    up_median = rows["boto_up"].median_seconds / rows["ours_up"].median_seconds
    down_median = rows["boto_down"].median_seconds / rows["ours_down"].median_seconds
    return up, up_median, down, down_median


def cpu_ratios(rows: dict[str, Row]) -> tuple[float, float]:
    """(upload, download): boto3's client CPU / ours, the least of each's runs. CPU seconds
    barely move with the machine's load, so these stay put when the wall-time ratios swing."""

    def least(key: str) -> float:
        return min(run.cpu_seconds for run in rows[key].runs)

    return least("boto_up") / least("ours_up"), least("boto_down") / least("ours_down")


def report(
    title: str, size: int, rows: dict[str, Row], served: dict[str, list[float]]
) -> None:
    first = next(iter(rows.values()))
    print(f"\n{title} ({first.load_before} → {first.load_after}):\n")
    print("| run | best s | MiB/s | median s | CPU s | server CPU s | peak RSS MiB | all runs (s)")
    print("|---|---:|---:|---:|---:|---:|---:|---")
    for key, row in rows.items():
        every = " ".join(f"{r.seconds:.2f}" for r in row.runs)
        print(
            f"| {row.label} | {row.best.seconds:.2f} | {size / MiB / row.best.seconds:.1f} "
            f"| {row.median_seconds:.2f} | {row.best.cpu_seconds:.2f} "
            f"| {statistics.median(served[key]):.2f} | {row.peak_rss:.1f} | {every}",
            flush=True,
        )
    up, up_median, down, down_median = ratios(rows)
    print(f"\nupload / boto3 {up:.2f} (median {up_median:.2f}); "
          f"daemon --once / boto3 {down:.2f} (median {down_median:.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--servers", default="localbucket,ministack")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-one-core", dest="one_core", action="store_false",
                        help="skip the pass with the clients under taskset -c 0")  # fmt: skip
    parser.add_argument("--workdir", help="artifact, downloads, server data (default /dev/shm)")
    args = parser.parse_args()

    print(
        f"# bench/transfer.py {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} CPUs, "
        f"{args.size_mib} MiB, best of {args.repeat}; {load()}"
    )
    results: dict[str, dict[str, dict[str, Row]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="distsync-bench-", dir=workdir_base(args.workdir)))
    try:
        source = workdir / "artifact.bin"
        write_random(source, args.size_mib * MiB)
        expected = sha256_of(source)
        for name in args.servers.split(","):
            results[name] = measure_server(name, args, workdir, source, expected)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n== summary: {args.size_mib} MiB, best of {args.repeat} (median), ours / boto3 ==")
    for name, passes in results.items():
        for cores, rows in passes.items():
            up, up_median, down, down_median = ratios(rows)
            cpu_up, cpu_down = cpu_ratios(rows)
            where = f"{name}, {'all cores' if cores == 'all' else 'one core'}"
            print(
                f"{where:24} upload {up:.2f} ({up_median:.2f})  daemon --once {down:.2f} "
                f"({down_median:.2f})  peak RSS up {rows['ours_up'].peak_rss:.0f} / down "
                f"{rows['ours_down'].peak_rss:.0f} MiB  CPU boto3/ours up {cpu_up:.2f} "
                f"down {cpu_down:.2f}"
            )
    print(
        f"goals: upload >= {GOALS['upload']:.2f}, daemon --once >= {GOALS['download']:.2f}, "
        f"peak RSS <= {RSS_GOAL:.0f} MiB ({load()} at the end)"
    )


if __name__ == "__main__":
    main()
