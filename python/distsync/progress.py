"""A progress line on a terminal for long transfers; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "human_bytes"]


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Call the instance with a byte count as work advances; ``close()`` ends the line."""

    def __init__(
        self,
        label: str,
        total: int | None,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
    ) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._label = label
        self._total = total
        self._done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0

    def __call__(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        if self._enabled and now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-6)
        rate = f"{human_bytes(self._done / elapsed)}/s"
        if self._total:
            fraction = min(self._done / self._total, 1.0)
            filled = "#" * int(fraction * 30)
            line = f"{self._label} [{filled:<30}] {fraction:6.1%} {human_bytes(self._done)} {rate}"
        else:
            line = f"{self._label} {human_bytes(self._done)} {rate}"
        self._stream.write("\r" + line[:120] + "\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()
