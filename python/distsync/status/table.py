"""``distsync status`` as text: one row per server, one column per artifact name."""

from __future__ import annotations

from distsync.logorder import version_id
from distsync.status.fleet import FleetView, ago

__all__ = ["render"]

_SHORT = {"failed": "FAILED", "behind": "behind", "pinned": "pinned", "stale": "stale"}


def render(view: FleetView, names: list[str], targets: dict[str, int | None]) -> list[str]:
    """The table and, under it, one summary line per name."""
    header = ["SERVER", "GROUPS", "LAST SEEN", *names]
    rows = [header]
    for server in view.servers:
        seen = ago(view.now - server.written_at)
        if not server.live(view.now):
            seen += f" ({view.liveness(server)})"
        row = [view.label(server), ",".join(server.groups) or "-", seen]
        for name in names:
            item = server.artifacts.get(name)
            version = (
                version_id(item.version) if item is not None and item.version is not None else "-"
            )
            marks = [_SHORT[m] for m in view.marks(server, name, targets.get(name)) if m != "stale"]
            row.append(" ".join([version, *marks]))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for name in names:
        target = targets.get(name)
        if target is not None:
            lines.append(view.summary(name, target))
    return lines
