"""The daemon's pure install rules: newest by sequence, no rollback, pins win."""

from __future__ import annotations

from pathlib import Path

import pytest
from distsync.errors import LocalIOError
from distsync.manifest import Manifest, Version
from distsync.state import DaemonState, Installed, StateFile, plan_installs


def version(seq: int, name: str = "app.tgz", uploaded_at: float = 0.0) -> Version:
    manifest = Manifest(
        name=name,
        size=1,
        sha256=f"{seq:064x}",
        object_key=f"o/{seq}",
        object_size=49,
        chunk_size=1 << 20,
        uploaded_at=uploaded_at,
        uploader="ci",
    )
    return Version(seq, f"log/{seq:020d}", manifest)


def test_newest_sequence_wins_whatever_the_clock_says() -> None:
    # The later log entry was stamped by an uploader whose clock runs 5 minutes behind.
    plan = plan_installs(
        DaemonState(), [version(1, uploaded_at=1000), version(2, uploaded_at=700)], {}
    )
    assert [v.seq for v in plan] == [2]


def test_one_install_per_name_in_log_order() -> None:
    found = [version(3, "b"), version(1, "a"), version(2, "a"), version(4, "c")]
    assert [v.seq for v in plan_installs(DaemonState(), found, {})] == [2, 3, 4]


def test_never_rolls_back() -> None:
    state = DaemonState(installed={"app.tgz": Installed(5, "x", 1)})
    assert plan_installs(state, [version(4), version(5)], {}) == []
    assert [v.seq for v in plan_installs(state, [version(4), version(6)], {})] == [6]


def test_pin_installs_older_and_holds() -> None:
    state = DaemonState(installed={"app.tgz": Installed(5, "x", 1)})
    pins = {"app.tgz": "3"}
    assert [v.seq for v in plan_installs(state, [version(3), version(6)], pins)] == [3]
    state.installed["app.tgz"] = Installed(3, "x", 1)
    assert plan_installs(state, [version(3), version(7)], pins) == []


def test_state_file_round_trip_and_corruption(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s" / "state.json")
    assert sf.load() == DaemonState()
    state = DaemonState(
        last_seq=9,
        marker_tag="t",
        installed={"a": Installed(9, "h", 3)},
        retry={"b": 8},
    )
    sf.save(state)
    assert sf.load() == state
    assert (sf.path.stat().st_mode & 0o777) == 0o600
    sf.path.write_text("{not json")
    with pytest.raises(LocalIOError, match="not a distsync state file"):
        sf.load()


def test_behind_returns_to_newest_after_a_pin_is_removed() -> None:
    state = DaemonState(installed={"app.tgz": Installed(1, "x", 1)}, newest={"app.tgz": 2})
    assert state.behind({"app.tgz": "1"}) == {}
    assert state.behind({}) == {"app.tgz": 2}
    state.rejected.append(2)
    assert state.behind({}) == {}


def test_behind_wants_pins_and_missing_names() -> None:
    state = DaemonState(installed={"a": Installed(5, "x", 1)}, newest={"a": 5, "b": 3})
    assert state.behind({"a": "4"}) == {"a": 4, "b": 3}
    assert state.behind({"c": "7"}) == {"b": 3, "c": 7}
