#!/usr/bin/env python3
"""Benchmark the v3 stream format against the machine's own AES-128-CBC and SHA-256 speed.

    python3 bench/crypto.py --size-mib 1024

Runs ``openssl speed`` (one core, 1 MiB blocks) for AES-128-CBC and SHA-256, then
encrypt_stream and decrypt_stream from a generated file to a file (on /dev/shm when it
exists), each in a fresh subprocess so its peak RSS (ru_maxrss) is its own, at two input sizes
to show that memory does not grow with the input. A benchmark, not a test: it asserts nothing
but that decryption gives back the input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

SECRET = bytes(range(32))
MB = 1e6


def openssl_speed(algorithm: str, seconds: int) -> float:
    """Bytes per second of ``openssl speed -evp ALGORITHM`` on 1 MiB blocks, one core."""
    out = subprocess.run(
        [
            "openssl",
            "speed",
            "-evp",
            algorithm,
            "-bytes",
            "1048576",
            "-seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The last line reads e.g. "AES-128-CBC    1407888.04k" (thousands of bytes per second).
    match = re.search(r"^\S+\s+([\d.]+)k\s*$", out.strip().splitlines()[-1])
    if not match:
        raise SystemExit(f"cannot parse openssl speed output:\n{out}")
    return float(match[1]) * 1000


def child(mode: str, src: str, dst: str, workers: int, chunk_size: int) -> None:
    """Run one encrypt or decrypt and print its figures as JSON (in a fresh process)."""
    from distsync.crypto.stream import decrypt_stream, encrypt_stream

    start = time.perf_counter()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if mode == "encrypt":
            result = encrypt_stream(SECRET, fin, fout, chunk_size=chunk_size, workers=workers)
        else:
            result = decrypt_stream(SECRET, fin, fout, workers=workers)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "plaintext": result.plaintext_size,
                "sha256": result.plaintext_sha256,
                "cpu": usage.ru_utime + usage.ru_stime,
                "maxrss_kib": usage.ru_maxrss,  # KiB on Linux
            }
        )
    )


def run(mode: str, src: Path, dst: Path, args: argparse.Namespace) -> dict[str, float | str]:
    argv = [sys.executable, __file__, "--child", mode, str(src), str(dst)]
    argv += ["--workers", str(args.workers), "--chunk-size", str(args.chunk_size)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    figures: dict[str, float | str] = json.loads(done.stdout)
    return figures


def generate(path: Path, mib: int) -> None:
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))


def measure(size_mib: int, work: Path, args: argparse.Namespace, aes: float) -> list[str]:
    plain, sealed, back = work / "plain", work / "sealed", work / "back"
    generate(plain, size_mib)
    rows, digests = [], set()
    for mode, src, dst in (
        ("encrypt", plain, sealed),
        ("decrypt", sealed, back),
        ("decrypt", sealed, Path(os.devnull)),
    ):
        run(mode, src, dst, args)  # warm-up: first touch of tmpfs pages is slow in VMs
        results = [run(mode, src, dst, args) for _ in range(args.repeat)]
        digests |= {str(r["sha256"]) for r in results}
        rates = [float(r["plaintext"]) / float(r["seconds"]) for r in results]
        best = max(rates)
        rss = max(float(r["maxrss_kib"]) for r in results) / 1024
        cpu = min(float(r["cpu"]) for r in results)
        target = "/dev/null" if dst == Path(os.devnull) else "file"
        rows.append(
            f"| {mode} → {target} | {size_mib} MiB | {best / MB:,.0f} MB/s "
            f"(median {statistics.median(rates) / MB:,.0f}) | {best / aes:.2f}x "
            f"| {cpu:.2f} s | {rss:.0f} MiB |"
        )
    if len(digests) != 1:
        raise SystemExit("decryption did not give back the input")
    for path in (plain, sealed, back):
        path.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="large input (MiB)")
    parser.add_argument("--small-mib", type=int, default=0, help="second size (default size/4)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row (best shown)")
    parser.add_argument("--workers", type=int, default=0, help="0: os.cpu_count(), at most 4")
    parser.add_argument("--chunk-size", type=int, default=1 << 20)
    parser.add_argument("--dir", help="where to put the files (default /dev/shm or a tmpdir)")
    parser.add_argument("--openssl-seconds", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, src, dst = args.child
        child(mode, src, dst, args.workers, args.chunk_size)
        return

    aes = openssl_speed("aes-128-cbc", args.openssl_seconds)
    sha = openssl_speed("sha256", args.openssl_seconds)
    import cryptography

    print(
        f"# {time.strftime('%Y-%m-%d')}: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"cryptography {cryptography.__version__}, chunk {args.chunk_size} B, "
        f"workers {args.workers or 'auto'}"
    )
    print(
        f"openssl speed, 1 MiB blocks, one core: AES-128-CBC {aes / MB:,.0f} MB/s, "
        f"SHA-256 {sha / MB:,.0f} MB/s"
    )
    print()
    print(
        f"| run | input | throughput, best of {args.repeat} | vs AES-128-CBC | CPU s | peak RSS |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    base = args.dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    with tempfile.TemporaryDirectory(prefix="distsync-bench-", dir=base) as work:
        small = args.small_mib or max(1, args.size_mib // 4)
        for size in (small, args.size_mib):
            for row in measure(size, Path(work), args, aes):
                print(row, flush=True)


if __name__ == "__main__":
    main()
