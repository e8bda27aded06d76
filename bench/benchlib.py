"""What bench/crypto.py and bench/transfer.py share: timing a whole child process, the
machine's load, and the summary table. A benchmark, not a test: nothing here asserts."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MB = 1e6
MiB = 1 << 20
ONE_CORE = ["taskset", "-c", "0"]  # the single-core view of the same code


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float  # user + system of the child, all threads: stabler than wall time
    rss_mib: float  # peak resident set (ru_maxrss)


def measure(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Run:
    """Wall time, CPU time and peak RSS of one child process (its own, via wait4)."""
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{log.read_text(errors='replace')}")
    return Run(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def load() -> str:
    """The 1-minute load average and what `uptime` would call it, for every figure."""
    one, five, _fifteen = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} CPUs"


@dataclass
class Row:
    """Repeated runs of one thing; ``best`` is the fastest, ``median`` the typical one."""

    label: str
    runs: list[Run]
    load_before: str
    load_after: str

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.seconds)

    @property
    def median_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_rss(self) -> float:
        return max(r.rss_mib for r in self.runs)


def write_random(path: Path, size: int) -> None:
    """``size`` incompressible bytes, made quickly (a counter folded into one random block)."""
    block = bytearray(os.urandom(16 * MiB))
    with open(path, "wb") as out:
        for at in range(0, size, len(block)):
            block[:8] = at.to_bytes(8, "big")
            out.write(memoryview(block)[: min(len(block), size - at)])


def workdir_base(requested: str | None) -> str | None:
    """tmpfs by default, so neither disk nor fsync hides the CPU cost."""
    return requested or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
