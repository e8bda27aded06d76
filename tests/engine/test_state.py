"""The daemon's pure install rules: newest by sequence, no rollback, pins win."""

from __future__ import annotations

from pathlib import Path

import pytest
from distsync import plugins
from distsync.errors import IntegrityError, LocalIOError
from distsync.manifest import Manifest, Version
from distsync.state import (
    RETRY_CAP,
    DaemonState,
    Installed,
    StateFile,
    legacy_state_file_names,
    plan_installs,
    retry_delay,
    state_file_name,
)


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
        DaemonState(), [version(1, uploaded_at=1000), version(2, uploaded_at=700)], {}, 0.0
    )
    assert [v.seq for v in plan] == [2]


def test_one_install_per_name_in_log_order() -> None:
    found = [version(3, "b"), version(1, "a"), version(2, "a"), version(4, "c")]
    assert [v.seq for v in plan_installs(DaemonState(), found, {}, 0.0)] == [2, 3, 4]


def test_never_rolls_back() -> None:
    state = DaemonState(installed={"app.tgz": Installed(5, "x", 1)})
    # An older entry found alone (a replay, a late upload, the newer entry's read failing this
    # cycle) must not replace the newer install: newest-wins alone would pick it.
    assert plan_installs(state, [version(4)], {}, 0.0) == []
    assert plan_installs(state, [version(4), version(5)], {}, 0.0) == []
    assert [v.seq for v in plan_installs(state, [version(4), version(6)], {}, 0.0)] == [6]


def test_pin_installs_older_and_holds() -> None:
    state = DaemonState(installed={"app.tgz": Installed(5, "x", 1)})
    pins = {"app.tgz": "3"}
    assert [v.seq for v in plan_installs(state, [version(3), version(6)], pins, 0.0)] == [3]
    state.installed["app.tgz"] = Installed(3, "x", 1)
    assert plan_installs(state, [version(3), version(7)], pins, 0.0) == []


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
    assert state.behind({"app.tgz": "1"}, 0.0) == {}
    assert state.behind({}, 0.0) == {"app.tgz": 2}
    state.reject(2, "app.tgz", now=0.0, base=10.0)
    assert state.behind({}, 5.0) == {}
    assert state.behind({}, 10.0) == {"app.tgz": 2}  # retried once its backoff has passed


def test_behind_wants_pins_and_missing_names() -> None:
    state = DaemonState(installed={"a": Installed(5, "x", 1)}, newest={"a": 5, "b": 3})
    assert state.behind({"a": "4"}, 0.0) == {"a": 4, "b": 3}
    assert state.behind({"c": "7"}, 0.0) == {"b": 3, "c": 7}


def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    delays = [retry_delay(attempts, base=15.0) for attempts in range(1, 12)]
    assert delays[:4] == [15.0, 30.0, 60.0, 120.0]
    assert max(delays) == RETRY_CAP and delays == sorted(delays)
    assert retry_delay(10**6, base=15.0) == RETRY_CAP  # no overflow however long it lasts


def test_a_rejected_version_is_due_again_after_its_delay_or_a_clock_jump() -> None:
    state = DaemonState()
    state.reject(7, None, now=1000.0, base=10.0)
    assert not state.due(7, 1005.0) and state.due(7, 1010.0)
    assert state.due_rejections(1010.0, limit=5) == [7]
    state.reject(7, None, now=1010.0, base=10.0)  # second failure: twice as long
    assert not state.due(7, 1029.0) and state.due(7, 1030.0)
    assert state.due(7, 1010.0 - 2 * RETRY_CAP)  # the clock went back a long way


def test_rejected_versions_that_are_no_ones_target_are_forgotten() -> None:
    state = DaemonState(newest={"app": 5})
    state.reject(5, "app", now=0.0, base=1.0)
    state.reject(4, "app", now=0.0, base=1.0)
    state.reject(9, None, now=0.0, base=1.0)  # a log entry: kept, it may come back
    state.forget_superseded_rejections({})
    assert sorted(state.rejected) == [5, 9]
    state.forget_superseded_rejections({"app": "4"})
    assert sorted(state.rejected) == [9]


def test_a_new_store_id_starts_a_new_log_and_keeps_the_content() -> None:
    state = DaemonState(
        store_id="a" * 32,
        last_seq=9,
        installed={"app": Installed(9, "h", 3)},
        newest={"app": 9},
        retry={"b": 8},
    )
    state.reject(8, None, now=0.0, base=1.0)
    assert not state.resets_for("a" * 32) and state.resets_for("b" * 32)
    assert not state.follow_store("a" * 32)
    assert state.follow_store("b" * 32)
    assert (state.last_seq, state.newest, state.retry, state.rejected) == (0, {}, {}, {})
    assert state.installed == {"app": Installed(0, "h", 3)}
    assert state.former_stores == ["a" * 32]
    # A version 1 of the new store is newer than what is installed.
    assert [v.seq for v in plan_installs(state, [version(1, "app")], {}, 0.0)] == [1]


def test_a_daemon_from_before_store_records_would_start_afresh() -> None:
    """What a store record may do to such a state: only a trusted one is followed."""
    state = DaemonState(last_seq=4, installed={"app": Installed(4, "h", 3)})
    assert state.resets_for("a" * 32)


def test_an_old_store_record_put_back_is_refused() -> None:
    state = DaemonState(store_id="b" * 32, former_stores=["a" * 32])
    with pytest.raises(IntegrityError, match="followed before"):
        state.follow_store("a" * 32)
    assert state.store_id == "b" * 32


def test_the_first_store_record_a_fresh_daemon_sees_changes_nothing() -> None:
    state = DaemonState()
    assert not state.resets_for("a" * 32)
    assert not state.follow_store("a" * 32)
    assert state.store_id == "a" * 32 and state.former_stores == []


def test_s3_and_s3_bittorrent_share_one_state_and_the_old_file_is_adopted(
    tmp_path: Path,
) -> None:
    where = ("bucket", "distsync/v3/")
    # The state key is the storage plugin's: the transfer after "+" is no part of it.
    s3 = plugins.find("storage", "S3").load().state_key
    assert state_file_name(s3, *where) != state_file_name("Local", *where)
    (old,) = legacy_state_file_names(s3, *where)
    assert old != state_file_name(s3, *where)
    assert legacy_state_file_names("Local", *where) == []
    StateFile(tmp_path / old).save(DaemonState(last_seq=4, installed={"a": Installed(4, "h", 1)}))
    current = StateFile(tmp_path / state_file_name(s3, *where), [tmp_path / old])
    assert current.load().last_seq == 4
    assert current.path.exists() and not (tmp_path / old).exists()


def test_a_state_file_from_before_retries_tries_its_rejections_again(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"last_seq": 3, "installed": {}, "rejected": [2, 3]}')
    state = StateFile(path).load()
    assert sorted(state.rejected) == [2, 3]
    assert state.due_rejections(0.0, limit=10) == [2, 3]
