"""Targeting and staged rollouts: the pure plan (wave sizes, ranks, the gate), the manifest's
new fields (and old manifests still read), halt records. Time is passed in; stores are real
directories."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from distsync.config import load_config
from distsync.crypto.secret import generate_secret, parse_secret
from distsync.errors import ConfigError, FormatError, IntegrityError
from distsync.manifest import MANIFEST, Manifest, Version, open_manifest, seal_manifest
from distsync.rollout.gate import RolloutGate
from distsync.rollout.halt import HALT_RECORD, Halt, HaltBoard
from distsync.rollout.plan import (
    Rollout,
    RolloutView,
    name_wanted,
    parse_waves,
    rank,
    targets,
    wave_sizes,
)
from distsync.sealed import open_sealed, seal_record_body
from distsync.state import DaemonState, StateFile
from distsync.status.fleet import FleetView
from distsync.status.record import ArtifactStatus, Failure, ServerStatus
from distsync.storage.counting import CountingStore
from distsync.storage.local import LocalStore

SECRET = parse_secret(generate_secret())
NOW = 1_800_000_000.0
APP = "app.tar.gz"
SEQ = 42
OBJECTS = "distsync/v3/objects/"


def node(n: int) -> str:
    return f"{n:032x}"


def server(n: int, *, seen: float = 1.0, groups: tuple[str, ...] = (), **kw: Any) -> ServerStatus:
    written = NOW - seen
    return ServerStatus(node=node(n), name=f"srv-{n}", written_at=written,
                        expires=written + 3 * 10.0, interval=10.0, started_at=written - 100,
                        groups=groups, **kw)  # fmt: skip


def having(version: int, *, at: float = NOW - 100, hook: str | None = None) -> dict[str, Any]:
    return {"artifacts": {APP: ArtifactStatus(version=version, installed_at=at, hook=hook)}}


def view(
    servers: list[ServerStatus],
    waves: str = "1,50%,100%",
    wait: float = 0.0,
    to: tuple[str, ...] | None = None,
    halted_by: str | None = None,
) -> RolloutView:
    rollout = Rollout(parse_waves(waves), wait)
    fleet = FleetView(servers, NOW)
    return RolloutView(fleet, APP, SEQ, to=to, rollout=rollout, halted_by=halted_by)


def ordered(count: int) -> list[int]:
    """Server numbers 1..count in their rollout order for version SEQ."""
    return sorted(range(1, count + 1), key=lambda n: rank(node(n), SEQ))


# -- wave specs and sizes ------------------------------------------------------------------


def test_parse_waves() -> None:
    assert parse_waves("1, 10%,50%,100%") == ("1", "10%", "50%", "100%")
    for bad, why in [
        ("", "a wave is"),
        ("0,100%", "a wave is"),
        ("1,0%,100%", "1% to 100%"),
        ("1,101%,100%", "1% to 100%"),
        ("1,x,100%", "a wave is"),
        ("1,50%", "last wave must be 100%"),
        (",".join(["1"] * 20 + ["100%"]), "1 to 20 waves"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_waves(bad)


def test_wave_sizes_are_cumulative_and_bounded() -> None:
    assert wave_sizes(("1", "10%", "50%", "100%"), 40) == [1, 4, 20, 40]
    assert wave_sizes(("1", "10%", "50%", "100%"), 3) == [1, 1, 2, 3]  # ceil, never fewer
    assert wave_sizes(("5", "2", "100%"), 3) == [3, 3, 3]  # never above, never decreasing
    assert wave_sizes(("1", "100%"), 0) == [0, 0]


def test_rank_depends_on_node_and_version() -> None:
    assert rank(node(1), 1) != rank(node(1), 2) != rank(node(2), 1)
    # A new version gets a new order: over many versions, each of 4 servers is a canary.
    canaries = {min(range(1, 5), key=lambda n, s=seq: rank(node(n), s)) for seq in range(60)}
    assert canaries == {1, 2, 3, 4}


def test_targeting() -> None:
    assert targets(None, ()) and targets(("web",), ("eu", "web"))
    assert not targets(("web",), ("worker",)) and not targets(("web",), ())
    assert name_wanted(None, "x") and name_wanted(("myapp-*.tar.gz", "nginx.conf"), "nginx.conf")
    assert not name_wanted(("myapp-*.tar.gz",), "other.tar.gz")
    assert not name_wanted(("*.tar.gz",), "A.TAR.GZ")  # case matters, on every platform


# -- the gate ------------------------------------------------------------------------------


def test_waves_open_one_after_the_other() -> None:
    order = ordered(4)
    fresh = [server(n) for n in range(1, 5)]
    v = view(fresh)
    assert [v.wave_of[node(n)] for n in order] == [0, 1, 2, 2]
    assert v.decide(node(order[0])).install
    assert not v.decide(node(order[1])).install
    assert "waiting for 1 server(s)" in v.decide(node(order[1])).reason
    # The canary installed: wave 2 may go, wave 3 waits for wave 2.
    done = {order[0]: having(SEQ)}
    v = view([server(n, **done.get(n, {})) for n in range(1, 5)])
    assert v.decide(node(order[1])).install
    assert not v.decide(node(order[2])).install and not v.decide(node(order[3])).install


def test_wave_wait_counts_from_the_last_install_of_earlier_waves() -> None:
    order = ordered(2)
    servers = [server(order[0], **having(SEQ, at=NOW - 5)), server(order[1])]
    assert not view(servers, "1,100%", wait=10).decide(node(order[1])).install
    assert "--wave-wait until" in view(servers, "1,100%", wait=10).decide(node(order[1])).reason
    assert view(servers, "1,100%", wait=5).decide(node(order[1])).install


def test_a_failure_halts_every_later_wave() -> None:
    order = ordered(4)
    canary = server(order[0], **having(SEQ, hook="failed"))
    v = view([canary, *(server(n) for n in order[1:])])
    assert v.halted() == f"halted at wave 1: srv-{order[0]} failed: its OnUpdate hook failed"
    assert not any(v.decide(node(n)).install for n in order)
    # Reported failed for good (verification) halts it the same way.
    failure = Failure(SEQ, "tampered", NOW - 1, True)
    broken = server(order[2], artifacts={APP: ArtifactStatus(failure=failure)})
    v = view([broken, *(server(n) for n in order if n != order[2])])
    assert v.halted() == f"halted at wave 3: srv-{order[2]} failed: tampered"
    assert not v.decide(node(order[0])).install


def test_operator_halt_stops_even_the_first_wave() -> None:
    v = view([server(n) for n in range(1, 4)], halted_by="ci-runner")
    assert v.halted() == "halted by ci-runner (distsync rollout --continue lifts it)"
    assert not any(v.decide(node(n)).install for n in range(1, 4))


def test_a_silent_server_stops_counting_and_the_next_takes_its_place() -> None:
    order = ordered(3)
    # The canary went silent (no record for longer than 3 intervals): not a candidate; the
    # next in order is the canary now, and the third waits for it: the gate is not skipped.
    silent = server(order[0], seen=31.0)
    v = view([silent, server(order[1]), server(order[2])], "1,100%")
    assert node(order[0]) not in v.wave_of
    assert v.decide(node(order[1])).install and not v.decide(node(order[2])).install
    # While its record is live it blocks the others.
    v = view([server(order[0], seen=29.0), server(order[1]), server(order[2])], "1,100%")
    assert not v.decide(node(order[1])).install


def test_only_targeted_unpinned_servers_are_candidates() -> None:
    order = ordered(4)
    web = {order[0], order[1]}
    servers = [server(n, groups=("web",) if n in web else ("worker",)) for n in order]
    v = view(servers, "1,100%", to=("web",))
    assert set(v.wave_of) == {node(n) for n in web}
    pinned = replace(servers[0], pins={APP: "7"})
    skipping = replace(servers[1], artifacts={APP: ArtifactStatus(skipped=SEQ)})
    v = view([pinned, skipping, *servers[2:]], "1,100%")
    assert set(v.wave_of) == {node(order[2]), node(order[3])}


def test_a_server_not_yet_reporting_waits() -> None:
    decision = view([server(1)]).decide(node(9))
    assert not decision.install and decision.wave is None


def test_view_json_and_lines() -> None:
    order = ordered(2)
    v = view([server(order[0], **having(SEQ)), server(order[1])], "1,100%", wait=30)
    shown = v.to_json()
    assert shown["waves"][0] == {"size": "1", "servers": {f"srv-{order[0]}": "installed"}}
    assert shown["waves"][1]["servers"] == {f"srv-{order[1]}": "behind"}
    assert shown["wave_wait"] == 30 and shown["halted"] is None
    assert v.lines()[0] == f"{APP} version {SEQ}: 2 targeted servers"


# -- the manifest --------------------------------------------------------------------------


def manifest(name: str = APP, **kw: Any) -> Manifest:
    return Manifest(name=name, size=3, sha256="0" * 64, object_key=OBJECTS + "x",
                    object_size=64 + 48, chunk_size=1 << 20, uploaded_at=1.0, uploader="ci",
                    **kw)  # fmt: skip


def test_manifest_round_trips_targets_and_waves() -> None:
    key = "distsync/v3/log/00000000000000000001"
    rollout = Rollout(("1", "100%"), 60.0)
    m = manifest(to=("web", "eu"), rollout=rollout.to_manifest())
    opened = open_manifest(SECRET, key, seal_manifest(SECRET, key, m), objects_prefix=OBJECTS)
    assert opened == m and opened.staged() == rollout


def test_untargeted_manifest_keeps_the_old_layout() -> None:
    key = "distsync/v3/log/00000000000000000001"
    body = open_sealed(MANIFEST, SECRET, key, seal_manifest(SECRET, key, manifest()))
    assert "to" not in body and "rollout" not in body
    # ... so a manifest written before targeting existed still opens.
    assert open_manifest(SECRET, key, seal_record_body(MANIFEST, SECRET, key, body),
                         objects_prefix=OBJECTS) == manifest()  # fmt: skip


@pytest.mark.parametrize(
    "field,value",
    [
        ("to", []),
        ("to", [1]),
        ("to", ["web\n"]),
        ("to", "web"),
        ("rollout", {"waves": ["1", "50%"], "wave_wait": 0}),
        ("rollout", {"waves": ["1", "100%"], "wave_wait": -1}),
        ("rollout", {"waves": ["1", "100%"], "wave_wait": True}),
        ("rollout", {"waves": ["1", "100%"]}),
        ("rollout", {"waves": "1,100%", "wave_wait": 0}),
    ],
)
def test_malformed_targets_and_waves_are_refused(field: str, value: Any) -> None:
    key = "distsync/v3/log/00000000000000000001"
    body = open_sealed(MANIFEST, SECRET, key, seal_manifest(SECRET, key, manifest()))
    body[field] = value
    with pytest.raises(FormatError, match=field):
        open_manifest(SECRET, key, seal_record_body(MANIFEST, SECRET, key, body),
                      objects_prefix=OBJECTS)  # fmt: skip


# -- halt records --------------------------------------------------------------------------


def test_halt_records(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    store = LocalStore(tmp_path / "bucket")
    board = HaltBoard(store, "distsync/v3/", SECRET)
    assert board.read(APP, SEQ) is None
    board.write(Halt(APP, SEQ, True, "ci-runner", NOW))
    assert board.read(APP, SEQ) == Halt(APP, SEQ, True, "ci-runner", NOW)
    # The key names the version only; the name is inside the encryption.
    (path,) = (p for p in (tmp_path / "bucket").rglob("*") if p.is_file())
    assert path.name == f"{SEQ:020d}" and APP.encode() not in path.read_bytes()
    with pytest.raises(FormatError, match="another version"):
        board.read("other.tar.gz", SEQ)
    # Moved to another version's key: refused.
    store.put(board.key(SEQ + 1), store.get(board.key(SEQ)))
    with pytest.raises(IntegrityError):
        board.read(APP, SEQ + 1)
    key = board.key(7)
    for bad in ({"halted": "yes"}, {"by": "ci\x1b[2J"}, {"extra": 1}):
        body = {"name": APP, "version": 7, "halted": True, "by": "x", "at": 1.0, **bad}
        store.put(key, seal_record_body(HALT_RECORD, SECRET, key, body))
        with pytest.raises(FormatError, match="malformed"):
            board.read(APP, 7)


# -- the daemon's gate and its config keys --------------------------------------------------


def test_names_key_parses_and_bad_values_name_the_key(
    write_config: Callable[..., Path],
) -> None:
    base = 'SharedSecret = "{secret}"\nStorageBucket = "b"\n'
    cfg = load_config(write_config(base + 'Names = ["myapp-*.tar.gz", "nginx.conf"]\n'))
    assert cfg.names == ("myapp-*.tar.gz", "nginx.conf")
    assert load_config(write_config(base)).names is None
    for bad in ('Names = [""]', "Names = [1]", 'Names = "x"'):
        with pytest.raises(ConfigError, match="Names"):
            load_config(write_config(base + bad + "\n"))


def test_gate_reads_the_fleet_once_per_interval_for_every_waiting_version(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "bucket").mkdir()
    cfg = load_config(write_config(
        'SharedSecret = "{secret}"\nStorageBucket = "bucket"\nStatusInterval = 60\n'
        f'StateDir = "{tmp_path / "state"}"\nGroups = ["web"]\nNames = ["app*"]\n'
    ))  # fmt: skip
    store = CountingStore(LocalStore(tmp_path / "bucket"))
    clock = [0.0]
    gate = RolloutGate(cfg, store, clock=lambda: clock[0])
    staged = Rollout(("1", "100%"), 0.0).to_manifest()
    versions = [
        Version(seq, f"k{seq}", manifest(name=f"app-{seq}", rollout=staged)) for seq in (5, 6)
    ]
    for _ in range(3):  # three polls: nobody reports yet, both wait
        assert not any([gate.admit(v, NOW) for v in versions])
        assert gate.resting(5) and gate.resting(6)
    assert store.requests["list"] == 1  # one listing of status/, shared
    assert store.requests["get"] == 2  # the two halt records (absent)
    clock[0] = 60.0  # a new decision is due: one more read
    assert not gate.resting(5)
    assert not any([gate.admit(v, NOW) for v in versions])
    assert store.requests["list"] == 2
    # Targeting is local: the manifest's groups against Groups, the name against Names.
    assert gate.for_me(manifest(name="app-1", to=("web", "db")))
    assert not gate.for_me(manifest(name="app-1", to=("db",)))
    assert not gate.for_me(manifest(name="other"))
    assert gate.admit(Version(7, "k7", manifest(name="app-7")), NOW)  # no waves: no reads
    assert store.requests["list"] == 2


def test_state_keeps_what_was_not_targeted_and_what_waits(tmp_path: Path) -> None:
    """A restart still reports "not targeted" and still waits for a held release's wave."""
    state_file = StateFile(tmp_path / "state.json")
    state = DaemonState(skipped={APP: 7}, held_releases={9: "app-9.tar.gz"})
    state_file.save(state)
    again = state_file.load()
    assert (again.skipped, again.held_releases) == ({APP: 7}, {9: "app-9.tar.gz"})
    # A store set up again starts afresh: its log numbers mean other versions.
    again.store_id = "old"
    again.follow_store("new")
    assert (again.skipped, again.held_releases) == ({}, {})
