#!/usr/bin/env python3
"""Benchmark distsync's S3 transfers against plain boto3 on the same server, in the same run.

    .venv/bin/python bench/transfer.py --size-mib 1024 [--server ministack|moto] [--repeat 3]

Starts an S3 server on loopback (ministack by default; moto in server mode answers every ranged
GET by copying the whole object under a lock, so at 1 GiB it, not the client, is what gets
measured), generates a random artifact, then times, each in a fresh subprocess so that its
peak RSS (ru_maxrss, read with wait4) and CPU time are its own:

* ``distsync upload`` (encrypt as a stream into a multipart upload, append the manifest)
  against boto3 ``upload_file`` of the plaintext (default TransferConfig);
* ``distsync download`` (ranged GETs, verify, decrypt, fsync, rename) against boto3
  ``download_file`` of the plaintext.

It prints throughputs and the ratios ours / baseline (the goal: >= 0.95, RSS <= 150 MiB).
Runs alternate baseline and ours; best and median of ``--repeat`` runs are shown, with every
run's time (a busy machine shows up as spread). A benchmark, not a test: it checks only that
every download is byte-identical to the input.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tests" / "system"))

from s3server import ACCESS_KEY, SECRET_KEY, MotoServer, free_port, s3_client  # noqa: E402

MiB = 1 << 20
BUCKET = "distsync-bench"

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


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user + system, all threads: less sensitive to a busy machine
    rss_mib: float


def measure(argv: list[str], env: dict[str, str], log: Path) -> Run:
    """Wall time and peak RSS of one child process (its own, via wait4)."""
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{log.read_text(errors='replace')}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(elapsed, cpu, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


class Ministack:
    """``ministack`` on a free loopback port, objects in memory (S3_PERSIST unset)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "ministack.log", "wb")  # noqa: SIM115 - closed in stop()
        env = dict(
            os.environ,
            BIND_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            S3_DATA_DIR=str(workdir / "ministack-data"),
            LOG_LEVEL="WARNING",
        )
        exe = Path(sys.executable).with_name("ministack")
        self.process = subprocess.Popen(
            [str(exe)], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit("ministack did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@contextlib.contextmanager
def server(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "moto":
        with MotoServer(workdir) as moto:
            yield moto.endpoint
    else:
        stack = Ministack(workdir)
        try:
            yield stack.endpoint
        finally:
            stack.stop()


def write_configs(workdir: Path, endpoint: str) -> Path:
    from distsync.crypto.secret import generate_secret

    path = workdir / "distsync.toml"
    path.write_text(
        f'SharedSecret = "{generate_secret()}"\nStorageBucket = "{BUCKET}"\nStorage = "S3"\n'
        f'[AwsCreds]\nAccessKey = "{ACCESS_KEY}"\nSecretKey = "{SECRET_KEY}"\n'
        f'Endpoint = "{endpoint}"\n'
    )
    path.chmod(0o600)
    return path


def make_artifact(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(16 * MiB)
    with open(path, "wb") as out:
        for n in range(0, size, len(block)):
            # Cheap distinct blocks: a counter folded into random bytes defeats any dedup.
            piece = n.to_bytes(8, "big") + block[8 : min(len(block), size - n)]
            digest.update(piece)
            out.write(piece)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(16 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def empty_bucket(client: object) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)  # type: ignore[attr-defined]
    for page in pages:
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})  # type: ignore[attr-defined]


def one_round(
    endpoint: str, config: Path, source: Path, expected: str, env: dict[str, str], workdir: Path
) -> dict[str, Run]:
    """Baseline and ours, alternating, each checked byte for byte (outside the timing)."""
    py = sys.executable
    boto = [py, "-c", BOTO_CHILD, "%s", endpoint, BUCKET, "plain"]
    ours = [py, "-m", "distsync", "%s", "-c", str(config)]
    log = workdir / "child.log"
    plain_copy = workdir / "boto-download.bin"
    ours_dir = workdir / "ours"
    ours_dir.mkdir(exist_ok=True)

    def argv(template: list[str], op: str, *extra: str) -> list[str]:
        return [op if part == "%s" else part for part in template] + list(extra)

    runs = {
        "boto_up": measure(argv(boto, "upload", str(source)), env, log),
        "ours_up": measure(argv(ours, "upload", str(source)), env, log),
        "boto_down": measure(argv(boto, "download", str(plain_copy)), env, log),
    }
    if sha256_of(plain_copy) != expected:
        raise SystemExit("boto3 download differs from the input")
    plain_copy.unlink()
    runs["ours_down"] = measure(argv(ours, "download", source.name, "-o", str(ours_dir)), env, log)
    if sha256_of(ours_dir / source.name) != expected:
        raise SystemExit("distsync download differs from the input")
    (ours_dir / source.name).unlink()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--server", choices=("ministack", "moto"), default="ministack")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--workdir",
        help="where the artifact and downloads go (default: a temp dir on /dev/shm if present)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    base = args.workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    workdir = Path(tempfile.mkdtemp(prefix="distsync-bench-", dir=base))
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(REPO / "python"),
        HOME=str(workdir),
    )
    results: dict[str, list[Run]] = {}
    try:
        source = workdir / "artifact.bin"
        expected = make_artifact(source, args.size_mib * MiB)
        with server(args.server, workdir) as endpoint:
            client = s3_client(endpoint)
            client.create_bucket(Bucket=BUCKET)
            config = write_configs(workdir, endpoint)
            for _ in range(args.repeat):
                empty_bucket(client)  # the server holds objects in memory
                for key, run in one_round(endpoint, config, source, expected, env, workdir).items():
                    results.setdefault(key, []).append(run)
            empty_bucket(client)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, args.size_mib * MiB, results)


def report(args: argparse.Namespace, size: int, results: dict[str, list[Run]]) -> None:
    best = {key: min(runs, key=lambda r: r.seconds) for key, runs in results.items()}
    median = {key: statistics.median(r.seconds for r in runs) for key, runs in results.items()}
    peak = {key: max(r.rss_mib for r in runs) for key, runs in results.items()}

    def mibps(key: str, seconds: dict[str, float] | None = None) -> float:
        return size / MiB / (seconds or {k: r.seconds for k, r in best.items()})[key]

    print(
        f"{args.size_mib} MiB artifact, server {args.server}, {args.repeat} run(s) each "
        "(a fresh process per run, start-up included)"
    )
    print(
        f"{'':22} {'best s':>7} {'MiB/s':>7} {'median s':>9} {'CPU s':>6} {'peak RSS MiB':>13}"
        "  all runs (s)"
    )
    labels = {
        "boto_up": "boto3 upload_file",
        "ours_up": "distsync upload",
        "boto_down": "boto3 download_file",
        "ours_down": "distsync download",
    }
    for key, label in labels.items():
        runs = " ".join(f"{r.seconds:.2f}" for r in results[key])
        print(
            f"{label:22} {best[key].seconds:7.2f} {mibps(key):7.1f} {median[key]:9.2f} "
            f"{best[key].cpu_seconds:6.2f} {peak[key]:13.1f}  {runs}"
        )
    up = mibps("ours_up") / mibps("boto_up")
    down = mibps("ours_down") / mibps("boto_down")
    up_median = median["boto_up"] / median["ours_up"]
    down_median = median["boto_down"] / median["ours_down"]
    print(f"ratio upload   (ours / boto3): {up:.2f} best, {up_median:.2f} median")
    print(f"ratio download (ours / boto3): {down:.2f} best, {down_median:.2f} median")
    if args.json:
        rows = {
            key: {
                "seconds": [r.seconds for r in results[key]],
                "cpu_seconds": [r.cpu_seconds for r in results[key]],
                "peak_rss_mib": peak[key],
            }
            for key in labels
        }
        summary = {
            "size_mib": args.size_mib,
            "server": args.server,
            "runs": rows,
            "ratio_upload_best": up,
            "ratio_download_best": down,
            "ratio_upload_median": up_median,
            "ratio_download_median": down_median,
        }
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
