#!/usr/bin/env python3
"""Benchmark `distsync encrypt` / `decrypt` against the machine's own single-core AES speed.

    .venv/bin/python bench/crypto.py              # 1 GiB, best of 3, all cores and one core

Measured in the same run, in this order:

1. Threads: AES-128-CBC, HMAC-SHA-256 and SHA-256 on 1 MiB buffers from one thread and from
   two. They scale only if the libraries release the GIL (cryptography >= 50, hashlib).
2. The baseline: ``openssl speed -evp aes-128-cbc`` (one core, 1 MiB blocks), before and after
   the runs; the higher figure is used, so a busy moment does not flatter the ratios.
3. CPU per byte of each step, one thread (read, write, AES, HMAC, SHA-256) and the CPU of
   starting the CLI. CPU time barely moves on a busy machine; added up per run and spread
   over the idle cores, it gives each run's ceiling.
4. Whole processes on a generated file, files on /dev/shm: ``distsync encrypt`` and
   ``distsync decrypt`` (start-up included), and the encryption upload does (the same plus the
   plaintext SHA-256 the manifest records). One untimed warm-up (the first write to fresh
   tmpfs pages is slow in these VMs), then ``--repeat`` runs; wall time, CPU time and peak RSS
   from wait4. Then the same under ``taskset -c 0``: one core.

The last lines are the summary: each figure as a ratio to the AES baseline, with the goal of
issue 13 and the load average around it. A benchmark, not a test: it checks only that
decryption gives back the input.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import MB, ONE_CORE, MiB, Row, Run, load, measure, workdir_base, write_random

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

GOALS = {"encrypt": 0.75, "decrypt": 1.0}

# The encryption of `distsync upload` (plaintext SHA-256 included), without the store.
UPLOAD_CHILD = """\
import sys
from distsync.config import load_config
from distsync.crypto.stream import encrypt_stream
cfg = load_config(sys.argv[1])
with open(sys.argv[2], "rb") as src, open(sys.argv[3], "wb") as dst:
    encrypt_stream(cfg.secret, src, dst, chunk_size=cfg.chunk_size)
"""


def openssl_speed(algorithm: str, seconds: int) -> float:
    """Bytes per second of ``openssl speed -evp ALGORITHM`` on 1 MiB blocks, one core."""
    out = subprocess.run(
        ["openssl", "speed", "-evp", algorithm, "-bytes", str(MiB), "-seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The last line reads e.g. "AES-128-CBC    1407888.04k" (thousands of bytes per second).
    match = re.search(r"^\S+\s+([\d.]+)k\s*$", out.strip().splitlines()[-1])
    if not match:
        raise SystemExit(f"cannot parse openssl speed output:\n{out}")
    return float(match[1]) * 1000


def thread_scaling(seconds: float = 1.0) -> list[str]:
    """MB/s of each primitive from one and from two threads, each on its own reused buffers."""
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = os.urandom(16)

    def aes(src: memoryview, dst: memoryview) -> None:
        Cipher(algorithms.AES(key), modes.CBC(key)).encryptor().update_into(src, dst)

    def mac(src: memoryview, _dst: memoryview) -> None:
        hmac.new(key, src, hashlib.sha256).digest()

    def sha(src: memoryview, _dst: memoryview) -> None:
        hashlib.sha256(src).digest()

    def rate(fn: object, threads: int) -> float:
        counts = [0] * threads
        stop = time.perf_counter() + seconds

        def work(slot: int) -> None:
            src = memoryview(bytearray(os.urandom(MiB)))
            dst = memoryview(bytearray(MiB + 16))
            while time.perf_counter() < stop:
                fn(src, dst)  # type: ignore[operator]
                counts[slot] += 1

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        started = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return sum(counts) * MiB / (time.perf_counter() - started)

    rows = []
    for name, fn in (("AES-128-CBC encrypt", aes), ("HMAC-SHA-256", mac), ("SHA-256", sha)):
        one = max(rate(fn, 1) for _ in range(2))
        two = max(rate(fn, 2) for _ in range(2))
        held = max(longest_wait(fn) for _ in range(3))
        verdict = "holds the GIL" if held > 0.5 else "releases the GIL"
        rows.append(
            f"| {name} | {one / MB:,.0f} | {two / MB:,.0f} | {two / one:.2f}x "
            f"| {held:.0%}: {verdict} |"
        )
    return rows


def longest_wait(fn: object) -> float:
    """The longest a second Python thread waited during one 128 MiB call, as a fraction of it.

    A call that holds the GIL stops every other thread for its whole length; one that releases
    it does not. Unlike the throughput columns, a busy machine does not blur this.
    """
    src = memoryview(bytearray(128 * MiB))
    dst = memoryview(bytearray(128 * MiB + 16))
    stamps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            stamps.append(time.perf_counter())

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.02)
    started = time.perf_counter()
    fn(src, dst)  # type: ignore[operator]
    ended = time.perf_counter()
    stop.set()
    ticker.join()
    inside = [started, *(t for t in stamps if started <= t <= ended), ended]
    return max(b - a for a, b in zip(inside, inside[1:])) / (ended - started)


def per_byte_costs(work: Path, config: Path) -> dict[str, float]:
    """CPU nanoseconds per byte of each step, one thread, 256 MiB in 1 MiB pieces.

    CPU time, not wall time: a busy machine slows these much less than it slows throughput.
    They add up to each run's CPU budget, and that budget divided over the cores is the
    fastest the run could be on an idle machine (the "ceiling" of the summary).
    """
    import hmac
    import resource

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = os.urandom(16)
    buf = memoryview(bytearray(MiB + 16))
    out = memoryview(bytearray(MiB + 16))
    count = 256
    source, target = work / "plain", work / "cost-write"

    def read() -> None:
        with open(source, "rb") as handle:
            for _ in range(count):
                handle.readinto(buf[:MiB])

    def write() -> None:
        target.unlink(missing_ok=True)
        with open(target, "wb") as handle:
            for _ in range(count):
                handle.write(out[:MiB])

    def aes_encrypt() -> None:
        for _ in range(count):
            Cipher(algorithms.AES(key), modes.CBC(key)).encryptor().update_into(buf[:MiB], out)

    def aes_decrypt() -> None:
        for _ in range(count):
            Cipher(algorithms.AES(key), modes.CBC(key)).decryptor().update_into(buf[:MiB], out)

    def mac() -> None:
        for _ in range(count):
            hmac.new(key, buf[:MiB], hashlib.sha256).digest()

    def sha() -> None:
        digest = hashlib.sha256()
        for _ in range(count):
            digest.update(buf[:MiB])

    def thread_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        return usage.ru_utime + usage.ru_stime

    costs = {}
    steps = {
        "read (tmpfs)": read,
        "write (new tmpfs file)": write,
        "AES-128-CBC encrypt": aes_encrypt,
        "AES-128-CBC decrypt": aes_decrypt,
        "HMAC-SHA-256": mac,
        "SHA-256": sha,
    }
    for name, step in steps.items():
        best = float("inf")
        for _ in range(3):
            started = thread_cpu()
            step()
            best = min(best, thread_cpu() - started)
        costs[name] = best / (count * MiB) * 1e9
    target.unlink(missing_ok=True)
    startup = measure(
        [sys.executable, "-m", "distsync", "encrypt", "-c", str(config), "-", "-o", os.devnull],
        work / "child.log",
        dict(os.environ, PYTHONPATH=str(REPO / "python")),
        stdin=subprocess.DEVNULL,
    )
    costs["start-up (s)"] = startup.cpu_seconds
    return costs


# What each run does per byte (the start-up comes on top, once).
RECIPES = {
    "encrypt": ("read (tmpfs)", "AES-128-CBC encrypt", "HMAC-SHA-256", "write (new tmpfs file)"),
    "decrypt": ("read (tmpfs)", "HMAC-SHA-256", "AES-128-CBC decrypt", "write (new tmpfs file)"),
    "upload's encryption": (
        "read (tmpfs)", "AES-128-CBC encrypt", "HMAC-SHA-256", "SHA-256", "write (new tmpfs file)",
    ),
}


def ceiling(label: str, costs: dict[str, float], size: int, cores: int) -> tuple[float, float]:
    """(CPU seconds the run needs, its shortest possible wall time on ``cores`` idle cores)."""
    cpu = sum(costs[step] for step in RECIPES[label]) * size / 1e9 + costs["start-up (s)"]
    return cpu, cpu / cores


def time_rows(
    args: argparse.Namespace, work: Path, config: Path, prefix: list[str]
) -> dict[str, Row]:
    plain, sealed, back, upload_sealed = (work / n for n in ("plain", "sealed", "back", "up"))
    cli = [*prefix, sys.executable, "-m", "distsync"]
    upload = [*prefix, sys.executable, "-c", UPLOAD_CHILD]
    # TMPDIR: should the CLI stage its output (it did for paths under /dev/), keep it on tmpfs.
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), TMPDIR=str(work))
    commands = {
        "encrypt": ([*cli, "encrypt", "-c", str(config), str(plain), "-o", str(sealed)], sealed),
        "decrypt": ([*cli, "decrypt", "-c", str(config), str(sealed), "-o", str(back)], back),
        "upload's encryption": (
            [*upload, str(config), str(plain), str(upload_sealed)],
            upload_sealed,
        ),
    }
    rows = {}
    log = work / "child.log"

    def run(argv: list[str], output: Path) -> Run:
        output.unlink(missing_ok=True)  # every run creates its output, as a user's would
        return measure(argv, log, env)

    for label, (argv, output) in commands.items():
        run(argv, output)  # warm-up
        before = load()
        runs = [run(argv, output) for _ in range(args.repeat)]
        rows[label] = Row(label, runs, before, load())
    if sha256_file(back) != sha256_file(plain):
        raise SystemExit("decryption did not give back the input")
    for path in (sealed, back, upload_sealed):
        path.unlink()
    return rows


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(16 * MiB):
            digest.update(block)
    return digest.hexdigest()


def print_rows(title: str, rows: dict[str, Row], size: int, aes: float) -> None:
    print(f"\n{title}\n")
    print("| run | best s | MB/s | vs AES | median s | CPU s | peak RSS MiB | load before → after")
    print("|---|---:|---:|---:|---:|---:|---:|---")
    for row in rows.values():
        rate = size / row.best.seconds
        print(
            f"| {row.label} | {row.best.seconds:.2f} | {rate / MB:,.0f} | {rate / aes:.2f}x "
            f"| {row.median_seconds:.2f} | {row.best.cpu_seconds:.2f} | {row.peak_rss:.0f} "
            f"| {row.load_before.split(' (')[0]} → {row.load_after.split(' (')[0]}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row (best shown)")
    parser.add_argument("--dir", help="where the files go (default /dev/shm)")
    parser.add_argument("--openssl-seconds", type=int, default=3)
    parser.add_argument("--no-one-core", action="store_true", help="skip the taskset -c 0 pass")
    args = parser.parse_args()

    import cryptography

    size = args.size_mib * MiB
    print(
        f"# bench/crypto.py {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, cryptography {cryptography.__version__}, "
        f"{args.size_mib} MiB, best of {args.repeat}; {load()}"
    )
    print("\nThreads (1 MiB buffers: they scale only if the GIL is released and cores are idle):\n")
    print("| primitive | 1 thread MB/s | 2 threads MB/s | scaling | longest wait of another thread")
    print("|---|---:|---:|---:|---")
    for line in thread_scaling():
        print(line, flush=True)

    aes_before = openssl_speed("aes-128-cbc", args.openssl_seconds)
    sha = openssl_speed("sha256", args.openssl_seconds)
    results: dict[str, dict[str, Row]] = {}
    with tempfile.TemporaryDirectory(prefix="distsync-bench-", dir=workdir_base(args.dir)) as tmp:
        work = Path(tmp)
        config = work / "distsync.toml"
        from distsync.crypto.secret import generate_secret

        config.write_text(f'SharedSecret = "{generate_secret()}"\nStorageBucket = "unused"\n')
        config.chmod(0o600)
        write_random(work / "plain", size)
        costs = per_byte_costs(work, config)
        print(f"\nCPU per byte, one thread ({load()}):\n")
        print("| step | core-ns/B |\n|---|---:|")
        for step, cost in costs.items():
            print(f"| {step} | {cost:.3f} |" if "(s)" not in step else f"| {step} | {cost:.2f} s |")
        results["all"] = time_rows(args, work, config, [])
        if not args.no_one_core:
            results["one"] = time_rows(args, work, config, ONE_CORE)
    aes_after = openssl_speed("aes-128-cbc", args.openssl_seconds)
    aes = max(aes_before, aes_after)
    print(
        f"\nopenssl speed, 1 MiB blocks, one core: AES-128-CBC {aes_before / MB:,.0f} MB/s "
        f"before, {aes_after / MB:,.0f} after (ratios use {aes / MB:,.0f}); "
        f"SHA-256 {sha / MB:,.0f} MB/s"
    )
    print_rows(f"All {os.cpu_count()} cores, files on tmpfs:", results["all"], size, aes)
    if "one" in results:
        print_rows("One core (taskset -c 0):", results["one"], size, aes)

    cores = os.cpu_count() or 1
    print(f"\n== summary: {args.size_mib} MiB, best of {args.repeat}, vs openssl AES-128-CBC ==")
    print(f"(ceiling: the CPU the steps above add up to, spread over {cores} idle cores)")
    for label in RECIPES:
        ratio = size / results["all"][label].best.seconds / aes
        cpu, fastest = ceiling(label, costs, size, cores)
        goal = GOALS.get(label)
        verdict = f"goal >= {goal:.2f}: {'met' if ratio >= goal else 'NOT met'}" if goal else ""
        one = results.get("one", {}).get(label)
        single = f"one core {size / one.best.seconds / aes:.2f}x" if one else ""
        print(
            f"{label:20} {ratio:5.2f}x  {single:16} ceiling {size / fastest / aes:.2f}x "
            f"(CPU {results['all'][label].best.cpu_seconds:.2f} s, model {cpu:.2f} s)  {verdict}"
        )
    print(f"({load()} at the end)")


if __name__ == "__main__":
    main()
