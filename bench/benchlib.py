"""What bench/crypto.py and bench/transfer.py share: timing a whole child process, the
machine's load, and the summary table. A benchmark, not a test: nothing here asserts."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
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


# Runs one command and writes "exit-code seconds cpu-seconds maxrss-KiB" to a file. Children
# inherit the peak RSS of the process that forks them (Linux carries it across exec), so the
# bench, which holds big buffers and imports boto3, never forks a measured command itself:
# this small launcher does.
_LAUNCHER = """\
import os, sys, time
result, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_pid, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - started
with open(result, "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {elapsed} "
              f"{usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
"""


def measure(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None, stdin: int | None = None
) -> Run:
    """Wall time, CPU time and peak RSS of one child process (its own, via wait4)."""
    result = log.with_suffix(".result")
    launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(result), *argv]
    with open(log, "wb") as out:
        done = subprocess.run(launcher, env=env, stdin=stdin, stdout=out, stderr=out, check=False)
    code, seconds, cpu, rss_kib = result.read_text().split() if not done.returncode else ["1"] * 4
    if done.returncode or int(code):
        raise SystemExit(f"{' '.join(argv)} failed:\n{log.read_text(errors='replace')}")
    return Run(float(seconds), float(cpu), int(rss_kib) / 1024)  # ru_maxrss is in KiB


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants so far, from /proc: for
    processes the bench does not ``wait4`` (servers, daemons in their namespaces)."""
    ticks = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    return ticks / os.sysconf("SC_CLK_TCK")


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
