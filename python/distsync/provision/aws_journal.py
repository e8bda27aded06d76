"""The undo journal of one setup run: everything it created, removed in reverse on failure.

When an undo fails too, the operator is told exactly what is left and the ``aws`` command
that removes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from distsync.provision.aws_client import AwsClients, is_not_found
from distsync.provision.options import Say

__all__ = ["Journal", "Undo", "aws_cli"]


@dataclass
class Undo:
    what: str
    action: Callable[[], object]
    command: str


class Journal:
    """Everything this run created, to remove in reverse order if a later step fails."""

    def __init__(self) -> None:
        self.entries: list[Undo] = []

    def add(self, what: str, action: Callable[[], object], command: str) -> None:
        self.entries.append(Undo(what, action, command))

    def roll_back(self, warn: Say) -> None:
        removed: list[str] = []
        left: list[Undo] = []
        for entry in reversed(self.entries):
            try:
                entry.action()
            except Exception as exc:
                if is_not_found(exc):
                    continue
                left.append(entry)
            else:
                removed.append(entry.what)
        if removed:
            warn("setup failed; removed what this run had created: " + "; ".join(removed))
        if left:
            warn("setup failed and could NOT remove (remove these by hand):")
            for entry in reversed(left):
                warn(f"  {entry.what}: {entry.command}")


def aws_cli(clients: AwsClients, args: str) -> str:
    """The ``aws`` command line that does ``args`` against the same endpoint."""
    endpoint = f" --endpoint-url {clients.endpoint}" if clients.endpoint else ""
    return f"aws{endpoint} {args}"
