"""Fleet status: the sealed record, the pure FleetView, the reporter's write rule, reading
records back, ``upload --wait``'s loop, and the config keys. Stores are real directories
(``LocalStore``); time is passed in."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from distsync.config import load_config
from distsync.crypto.secret import generate_secret, parse_secret
from distsync.errors import ConfigError, FleetError, FormatError, IntegrityError
from distsync.logorder import position
from distsync.manifest import Manifest, Version
from distsync.node import load_node_id, node_id_of
from distsync.release.state import ActivationOutcome
from distsync.sealed import seal_record_body
from distsync.state import DaemonState, Installed
from distsync.status.board import StatusBoard, Throttle
from distsync.status.fleet import FleetView
from distsync.status.record import (
    STATUS_RECORD,
    ArtifactStatus,
    Failure,
    ServerStatus,
    open_status,
    seal_status,
)
from distsync.status.reporter import FleetReporter, Identity
from distsync.status.wait import wait_for_version
from distsync.storage.counting import CountingStore
from distsync.storage.local import LocalStore
from distsync.swarm.peerbook import PEER_RECORD

SECRET = parse_secret(generate_secret())
NOW = 1_800_000_000.0
APP = "app.tar.gz"


def bucket(tmp_path: Path) -> LocalStore:
    (tmp_path / "bucket").mkdir(exist_ok=True)
    return LocalStore(tmp_path / "bucket")


def node(n: int) -> str:
    return f"{n:032x}"


def server(
    n: int, name: str | None = None, *, seen: float = 10.0, interval: float = 300.0, **kw: Any
) -> ServerStatus:
    written = NOW - seen
    return ServerStatus(
        node=node(n),
        name=name or f"srv-{n}",
        written_at=written,
        expires=written + 3 * interval,
        interval=interval,
        started_at=written - 100,
        **kw,
    )


def has(version: int | None, **kw: Any) -> dict[str, ArtifactStatus]:
    return {APP: ArtifactStatus(version=version, sha256="ab" * 32 if version else None, **kw)}


# -- the record ----------------------------------------------------------------------------


def full_record() -> ServerStatus:
    return server(
        7,
        "web-1",
        groups=("web", "eu"),
        daemon="0.1.0",
        last_poll=NOW - 3,
        bytes_store=123,
        bytes_peers=456,
        pins={"db.tar": "3"},
        artifacts={
            APP: ArtifactStatus(4, "cd" * 32, NOW - 50, 5, "ok", Failure(5, "bad", NOW, True)),
            "db.tar": ArtifactStatus(newest=9),
        },
    )


def test_a_record_survives_sealing_and_names_nothing_in_plaintext() -> None:
    record = full_record()
    key = "distsync/v3/status/" + record.node
    sealed = seal_status(SECRET, key, record)
    assert sealed.startswith(b"DST3")
    for text in (b"web-1", b"eu", APP.encode(), b"db.tar", b"bad"):
        assert text not in sealed
    assert open_status(SECRET, key, sealed) == record


def test_a_record_moved_altered_or_under_another_secret_fails() -> None:
    record = full_record()
    key = "distsync/v3/status/" + record.node
    sealed = seal_status(SECRET, key, record)
    with pytest.raises(IntegrityError, match="moved from another key"):
        open_status(SECRET, "distsync/v3/status/" + node(8), sealed)
    flipped = bytearray(sealed)
    flipped[40] ^= 1
    with pytest.raises(IntegrityError):
        open_status(SECRET, key, bytes(flipped))
    with pytest.raises(IntegrityError):
        open_status(parse_secret(generate_secret()), key, sealed)
    # A genuine peer record is another kind: refused before any cryptography.
    peer = seal_record_body(PEER_RECORD, SECRET, key, {"node": record.node})
    with pytest.raises(FormatError, match="not a distsync status record"):
        open_status(SECRET, key, peer)


def test_a_genuine_record_that_names_another_node_or_is_malformed_is_refused() -> None:
    record = full_record()
    other_key = "distsync/v3/status/" + node(9)
    with pytest.raises(FormatError, match="names another node"):
        open_status(SECRET, other_key, seal_status(SECRET, other_key, record))
    key = "distsync/v3/status/" + record.node
    body = record.to_body()
    for field, value in (("stopped", "no"), ("groups", "web"), ("v", 2), ("written_at", -1)):
        bad = dict(body, **{field: value})
        with pytest.raises(FormatError, match="malformed"):
            open_status(SECRET, key, seal_record_body(STATUS_RECORD, SECRET, key, bad))  # fmt: skip
    artifacts = {APP: dict(body["artifacts"][APP], hook="maybe")}
    with pytest.raises(FormatError, match="malformed"):
        bad_artifacts = dict(body, artifacts=artifacts)
        open_status(SECRET, key, seal_record_body(STATUS_RECORD, SECRET, key, bad_artifacts))


# -- the view (pure) -------------------------------------------------------------------------


def test_each_server_stands_where_its_record_says() -> None:
    view = FleetView(
        [
            server(1, artifacts=has(42)),
            server(2, artifacts=has(43)),  # a newer upload supersedes the one waited for
            server(3, artifacts=has(42, hook="failed")),
            server(4, artifacts=has(41, failure=Failure(42, "chunk 3 failed", NOW, True))),
            server(5, artifacts=has(41), pins={APP: "41"}),
            server(6, artifacts=has(41, failure=Failure(42, "store 503", NOW, False))),
            server(7, artifacts=has(41)),
            server(8, artifacts={}),
        ],
        NOW,
    )
    states = {s.label: (s.state, s.detail) for s in view.standings(APP, 42)}
    assert states == {
        "srv-1": ("installed", ""),
        "srv-2": ("installed", "has newer version 43"),
        "srv-3": ("unhealthy", "its OnUpdate hook failed"),
        "srv-4": ("failed", "chunk 3 failed"),
        "srv-5": ("pinned", "pinned to version 41"),
        "srv-6": ("retrying", "retrying: store 503"),
        "srv-7": ("behind", "has version 41"),
        "srv-8": ("behind", "has none"),
    }
    assert view.target(APP) == 43
    assert view.summary(APP, 42) == (
        "2 of 8 servers have app.tar.gz version 42; failed: srv-4 (chunk 3 failed); "
        "unhealthy: srv-3 (its OnUpdate hook failed); retrying: srv-6 (retrying: store 503); "
        "pinned: srv-5 (pinned to version 41); behind: srv-7 (has version 41), srv-8 (has none)"
    )


def test_waiting_for_n_servers_or_all_live_ones() -> None:
    records = [
        server(1, artifacts=has(42)),
        server(2, artifacts=has(42)),
        server(3, artifacts=has(41)),
        server(4, artifacts=has(41), pins={APP: "41"}),  # never installs 42: not waited for
        server(5, artifacts=has(41), seen=4000),  # silent for > 3 intervals: not live
        server(6, artifacts=has(41), stopped=True),
    ]
    view = FleetView(records, NOW)
    assert view.verdict(APP, 42, 2).done
    three = view.verdict(APP, 42, 3)
    assert not three.done and not three.failed and (three.reached, three.wanted) == (2, 3)
    assert "missing: srv-3 (has version 41), " in three.message
    assert "srv-5 (has version 41; stale, last seen 67 min ago)" in three.message
    every = view.verdict(APP, 42, None)
    assert (every.done, every.reached, every.wanted) == (False, 2, 3)
    assert (
        every.message
        == "app.tar.gz version 42: 2 of 3 servers installed it; missing: srv-3 (has version 41)"
    )
    records[2] = server(3, artifacts=has(42))
    assert FleetView(records, NOW).verdict(APP, 42, None).done
    # A failure anywhere ends the wait, whatever the count.
    records.append(server(9, artifacts=has(None, failure=Failure(42, "tampered", NOW, True))))
    failed = FleetView(records, NOW).verdict(APP, 42, 1)
    assert failed.failed and failed.message.endswith("failed: srv-9 (tampered)")
    # Nobody at all: never done.
    assert not FleetView([], NOW).verdict(APP, 42, None).done


def test_servers_sharing_a_name_are_told_apart_and_long_lists_are_cut() -> None:
    view = FleetView([server(n, "web", artifacts=has(1)) for n in range(1, 13)], NOW)
    labels = [view.label(s) for s in view.servers]
    assert len(set(labels)) == 12 and labels[0] == "web#" + node(1)
    verdict = view.verdict(APP, 2, None)
    assert verdict.message.endswith("and 4 more")


def test_json_is_stable_and_names_versions_as_ids() -> None:
    view = FleetView([full_record(), server(1, artifacts=has(5))], NOW)
    shown = view.to_json()
    assert [s["name"] for s in shown["servers"]] == ["srv-1", "web-1"]
    web = shown["servers"][1]
    assert set(web) == {
        "node", "name", "label", "groups", "daemon", "state", "last_seen", "seconds_since_seen",
        "interval", "started_at", "last_poll", "bytes_from_store", "bytes_from_peers",
        "artifacts",
    }  # fmt: skip
    assert web["artifacts"][APP] == {
        "version": "4",
        "sha256": "cd" * 32,
        "installed_at": NOW - 50,
        "newest": "5",
        "hook": "ok",
        "pinned": None,
        "not_targeted": None,
        "failure": {"version": "5", "reason": "bad", "at": NOW, "final": True},
        "marks": ["failed"],
    }
    assert web["artifacts"]["db.tar"]["marks"] == ["pinned"]
    app = next(a for a in shown["artifacts"] if a["name"] == APP)
    assert (app["version"], app["installed"], app["failed"]) == ("5", ["srv-1"], {"web-1": "bad"})


def test_versions_of_the_tagged_log_are_shown_and_compared_as_ids() -> None:
    """On a store without atomic create, versions are positions like 41.9f3ac2e07b5d."""
    old, new = position(41, 0x9F3AC2E07B5D), position(41, 0xA00000000000)
    pinned = server(2, pins={APP: "41.9f3ac2e07b5d"}, artifacts=has(old))
    waiting = server(3, pins={APP: "41.9f3ac2e07b5d"}, artifacts=has(None))
    view = FleetView([server(1, artifacts=has(old)), pinned, waiting], NOW)
    assert view.summary(APP, new).startswith(f"0 of 3 servers have {APP} version 41.a00000000000")
    standings = {s.label: s for s in view.standings(APP, new)}
    assert standings["srv-1"].detail == "has version 41.9f3ac2e07b5d"
    assert standings["srv-2"].state == "pinned"  # the pin names the old version, by its id
    assert view.standing(pinned, APP, old).state == "installed"
    assert view.standing(waiting, APP, old).state == "behind"  # pinned to this very version
    shown = view.to_json(APP, new)
    assert shown["servers"][0]["artifacts"][APP]["version"] == "41.9f3ac2e07b5d"
    assert shown["artifacts"][0]["version"] == "41.a00000000000"


# -- the reporter's write rule ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def reporter_on(
    tmp_path: Path, clock: Clock, state: DaemonState
) -> tuple[FleetReporter, CountingStore]:
    store = CountingStore(bucket(tmp_path))
    board = StatusBoard(store, "distsync/v3/", SECRET)
    reporter = FleetReporter(
        board, Identity(node(1), "web-1", ("web",)), store, lambda: state, tmp_path,
        interval=300, pins={}, clock=clock,
    )  # fmt: skip
    return reporter, store


def version(seq: int) -> Version:
    return Version(
        seq, f"log/{seq}", Manifest(APP, 10, "ef" * 32, "objects/x", 100, 16384, NOW, "ci")
    )


def test_an_idle_server_writes_one_record_per_interval_and_changes_at_once(tmp_path: Path) -> None:
    clock, state = Clock(), DaemonState()
    reporter, store = reporter_on(tmp_path, clock, state)
    assert reporter.write()  # the first record announces the server
    for _ in range(10):  # polls with nothing new: no write
        clock.now += 20
        reporter.cycle_done(0.01)
        assert not reporter.write()
    clock.now += 100  # 300 s after the first: the heartbeat
    assert reporter.write()
    assert store.requests["put"] == 2
    # An install is written at once, and what it says is read back.
    state.installed[APP] = Installed(3, "ef" * 32, 10)
    reporter.installing(version(3))
    reporter.installed(version(3), hook=False, swarm=False)
    clock.now += 1
    assert reporter.write()
    reporter.failed(version(4), "chunk 0 failed\nauthentication", final=True)
    assert reporter.write()
    (record,) = StatusBoard(store, "distsync/v3/", SECRET).read_all()
    assert record.artifacts[APP] == ArtifactStatus(
        3,
        "ef" * 32,
        clock.now - 1,
        None,
        "failed",
        Failure(4, "chunk 0 failed authentication", clock.now, True),
    )
    assert record.live(clock.now) and record.expires == clock.now + 900
    # Stopping says so, and the record stops counting at once.
    reporter.close(stopped=True)
    (last,) = StatusBoard(store, "distsync/v3/", SECRET).read_all()
    assert last.stopped and not last.live(clock.now) and last.expires == last.written_at


def test_release_activations_are_reported_like_installs(tmp_path: Path) -> None:
    """[[Release]] names are not in the daemon's state file: activations tell the reporter."""
    clock, state = Clock(), DaemonState()
    reporter, store = reporter_on(tmp_path, clock, state)

    def outcome(version: str, healthy: bool, current: str) -> ActivationOutcome:
        reason = None if healthy else "health check exited 1"
        return ActivationOutcome(
            "app-*", "/srv/app", APP, version, "ab" * 32, healthy, reason, clock.now, current
        )

    reporter.activated(outcome("7", True, "7"))
    reporter.write()
    clock.now += 1
    reporter.activated(outcome("8", False, "7"))  # switched back to 7
    reporter.write()
    (record,) = StatusBoard(store, "distsync/v3/", SECRET).read_all()
    item = record.artifacts[APP]
    assert (item.version, item.hook) == (7, "ok")
    assert item.failure == Failure(8, "health check exited 1", clock.now, True)
    standing = FleetView([record], clock.now).standing(record, APP, 8)
    assert (standing.state, standing.detail) == ("failed", "health check exited 1")


def test_a_failed_write_is_retried_later_not_on_every_poll(tmp_path: Path) -> None:
    clock, state = Clock(), DaemonState()
    reporter, store = reporter_on(tmp_path, clock, state)
    (tmp_path / "bucket").rename(tmp_path / "gone")  # the store fails every write
    assert not reporter.write()
    clock.now += 5
    assert not reporter.write() and store.requests["put"] == 1
    clock.now += 30
    assert not reporter.write() and store.requests["put"] == 2
    (tmp_path / "gone").rename(tmp_path / "bucket")
    clock.now += 1
    assert not reporter.write()  # not yet due
    clock.now += 30
    assert reporter.write() and store.requests["put"] == 3


# -- reading records back ------------------------------------------------------------------


def test_bad_records_are_skipped_with_one_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = bucket(tmp_path)
    board = StatusBoard(store, "distsync/v3/", SECRET, limit=3)
    for n in (1, 2):
        board.publish(server(n))
    store.put(board.key(node(3)), b"DST3" + b"\0" * 80)  # forged
    store.put(board.key("not-a-node-id"), b"x")  # ignored: not a record key
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        assert [s.name for s in board.read_all()] == ["srv-1", "srv-2"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "failed authentication" in warnings[0]
    board.publish(server(4))
    board.publish(server(5))
    assert len(board.read_all()) == 2  # the first three keys, one of them forged
    assert any("only the first 3 read" in r.getMessage() for r in caplog.records)


def test_throttle_allows_one_warning_per_subject_and_period() -> None:
    clock = Clock()
    throttle = Throttle(60, clock=clock)
    assert throttle.allow("a") and throttle.allow("b")
    assert not throttle.allow("a")
    clock.now += 61
    assert throttle.allow("a")


def test_wait_times_out_with_the_missing_servers_and_survives_a_failing_listing(
    tmp_path: Path,
) -> None:
    store = bucket(tmp_path)
    board = StatusBoard(store, "distsync/v3/", SECRET)
    board.publish(server(1, artifacts=has(42)))
    board.publish(server(2, artifacts=has(41)))
    clock = Clock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    with pytest.raises(FleetError) as err:
        wait_for_version(board, APP, 42, servers=2, timeout=10, clock=clock, sleep=sleep)
    assert str(err.value) == (
        "timed out after 10 s: app.tar.gz version 42: 1 of 2 servers installed it; "
        "missing: srv-2 (has version 41)"
    )
    assert err.value.exit_code == 6 and sum(slept) == pytest.approx(10)
    done = wait_for_version(board, APP, 42, servers=1, timeout=10, clock=clock, sleep=sleep)
    assert done.done and done.reached == 1


# -- node identity, config -------------------------------------------------------------------


def test_node_id_is_made_once_and_a_swarm_id_is_adopted(tmp_path: Path) -> None:
    first = node_id_of(tmp_path / "a")
    assert node_id_of(tmp_path / "a") == first and len(first) == 32
    swarm = load_node_id(tmp_path / "b" / "torrent" / "node-id")
    assert node_id_of(tmp_path / "b") == swarm


def test_fleet_keys_parse(write_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = load_config(
        write_config(
            'SharedSecret = "{secret}"\nStorageBucket = "b"\nNodeName = "web-1"\n'
            'Groups = ["web", "eu", "web"]\nStatusInterval = 60\n'
            'MetricsAddress = "[::1]:9717"\nMetricsTextfile = "m/distsync.prom"\n'
        )
    )
    assert (cfg.node_name, cfg.groups, cfg.status_interval) == ("web-1", ("web", "eu"), 60.0)
    assert cfg.metrics_address == ("::1", 9717)
    assert cfg.metrics_textfile == tmp_path / "m" / "distsync.prom"
    default = load_config(write_config('SharedSecret = "{secret}"\nStorageBucket = "b"\n'))
    assert default.metrics_address is None and default.status_interval == 300
    assert load_config(write_config(
        'SharedSecret = "{secret}"\nStorageBucket = "b"\nMetricsAddress = ":9717"\n'
    )).metrics_address == ("127.0.0.1", 9717)  # fmt: skip


@pytest.mark.parametrize(
    "line,key,words",
    [
        ('NodeName = ""', "NodeName", "1-255 printable"),
        ('Groups = "web"', "Groups", "must be a list"),
        ('Groups = ["web", 3]', "Groups", "list of names"),
        ("StatusInterval = 0", "StatusInterval", "between"),
        ('MetricsAddress = "9717"', "MetricsAddress", "HOST:PORT"),
        ('MetricsAddress = "localhost:99999"', "MetricsAddress", "HOST:PORT"),
        ('MetricsTextfile = "/var/lib/node_exporter/distsync.txt"', "MetricsTextfile", ".prom"),
    ],
)
def test_fleet_key_errors(
    write_config: Callable[..., Path], line: str, key: str, words: str
) -> None:
    path = write_config(f'SharedSecret = "{{secret}}"\nStorageBucket = "b"\n{line}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {key}: ") and words in str(err.value)


def test_stable_ignores_only_what_changes_on_every_write() -> None:
    record = full_record()
    assert replace(record, written_at=1.0, last_poll=2.0, bytes_store=9).stable() == record.stable()
    assert replace(record, groups=("db",)).stable() != record.stable()
