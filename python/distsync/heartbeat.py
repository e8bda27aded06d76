"""Whether the daemon's work is moving: what feeds systemd's watchdog.

A thread that is alive proves nothing (it may wait forever on a lock or a socket), so the
watchdog is fed from progress instead: the store answered, a batch of an artifact was
written, a cycle began. Work that is known to be silent for a while declares how long
(``expect``: an OnUpdate hook may run up to HookTimeout). Pure: the caller passes the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Heartbeat"]


@dataclass
class Heartbeat:
    """``fresh`` while the last progress is at most ``allowance`` seconds old."""

    last: float  # when the work last moved
    allowance: float = math.inf
    quiet_until: float = -math.inf  # a declared silence ends here

    def beat(self, now: float) -> None:
        self.last = max(self.last, now)

    def expect(self, now: float, seconds: float) -> None:
        """The work will be silent for up to ``seconds`` from ``now``, and that is fine."""
        self.quiet_until = max(self.quiet_until, now + seconds)

    def fresh(self, now: float) -> bool:
        return now - self.last <= self.allowance or now <= self.quiet_until

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.last)
