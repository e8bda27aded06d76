"""What `distsync releases` shows and a rollback's answer carries: one release described from
its directory and state file alone (no store, no daemon needed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distsync.logorder import version_id
from distsync.release.config import ReleaseSpec
from distsync.release.layout import ReleaseLayout
from distsync.release.state import ReleaseState, load_state
from distsync.state import pin_position

__all__ = ["config_pin", "describe"]


def config_pin(spec: ReleaseSpec, pins: Mapping[str, str]) -> int | None:
    """A ``[Pin]`` on a name this release takes holds the release at that version."""
    held = [pin_position(version) for name, version in pins.items() if spec.claims(name)]
    return max(held) if held else None


def describe(
    spec: ReleaseSpec, pins: Mapping[str, str], state: ReleaseState | None = None
) -> dict[str, Any]:
    """The release as data: stable keys, documented in docs/operations.md."""
    layout = ReleaseLayout(spec.dir)
    if state is None:
        state = load_state(layout.state_path)
    kept = layout.kept()
    current = layout.current()
    pin = config_pin(spec, pins)
    hold = pin if pin is not None else state.hold
    versions = sorted(set(kept) | set(state.failed), reverse=True)
    return {
        "release": spec.label,
        "dir": str(spec.dir),
        "current": None if current is None else version_id(current[0]),
        "held": None if hold is None else version_id(hold),
        "held_by": None if hold is None else ("pin" if pin is not None else "operator"),
        "activating": None if state.activating is None else version_id(state.activating.version),
        "releases": [
            {
                "version": version_id(version),
                "name": kept.get(version) or state.failed[version].name,
                "sha256": state.sha256.get(version, ""),
                "kept": version in kept,
                "current": current is not None and current[0] == version,
                "failed": version in state.failed,
                "reason": state.failed[version].reason if version in state.failed else None,
                "failed_at": state.failed[version].at if version in state.failed else None,
            }
            for version in versions
        ],
        "last": None if state.last is None else state.last.facts(),
    }
