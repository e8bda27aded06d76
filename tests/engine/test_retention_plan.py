"""The pure decisions of retention: which contents go, which stay and why (no store, no clock)."""

from __future__ import annotations

import pytest
from distsync.errors import UsageError
from distsync.manifest import Manifest, Version
from distsync.retention import Protected, parse_duration, plan_orphans, plan_prune
from distsync.storage.base import StoredObject

DAY = 86400.0
NOW = 100 * DAY


def version(seq: int, name: str = "app.tgz", *, key: str | None = None, age: float = 0) -> Version:
    manifest = Manifest(
        name=name,
        size=3,
        sha256="0" * 64,
        object_key=key or f"p/objects/{seq}",
        object_size=1000 + seq,
        chunk_size=1 << 20,
        uploaded_at=NOW - age,
        uploader="ci",
    )
    return Version(seq, f"p/log/{seq:020d}", manifest)


def keys(versions: list[Version]) -> set[str]:
    return {v.manifest.object_key for v in versions}


def seqs(versions: list[Version]) -> list[int]:
    return [v.seq for v in versions]


def test_keeps_the_newest_n_of_each_name_by_sequence_not_clock() -> None:
    # Upload times disagree with the log (clocks of CI runners): the log's order wins.
    log = [version(n, age=n * DAY) for n in range(1, 6)] + [version(6, "other.bin")]
    plan = plan_prune(log, keys(log), keep=2, now=NOW)
    assert seqs(plan.delete) == [3, 2, 1]
    assert plan.bytes == 1003 + 1002 + 1001
    assert sorted(seqs(plan.kept)) == [4, 5, 6]


def test_only_contents_still_there_count_toward_keep() -> None:
    log = [version(n) for n in range(1, 6)]
    present = keys(log) - {"p/objects/5"}  # the newest was deleted by hand
    plan = plan_prune(log, present, keep=2, now=NOW)
    assert seqs(plan.delete) == [2, 1]


def test_names_older_than_and_incoming() -> None:
    log = [version(n, age=(6 - n) * DAY) for n in range(1, 6)] + [version(6, "other.bin")]
    log.append(version(7, "other.bin"))
    only_app = plan_prune(log, keys(log), keep=1, names=["app.tgz"], now=NOW)
    assert seqs(only_app.delete) == [4, 3, 2, 1]
    old = plan_prune(log, keys(log), keep=1, older_than=2.5 * DAY, now=NOW)
    assert seqs(old.delete) == [3, 2, 1]  # 4 (2 days old) and 6 (new) are young enough to stay
    # An upload about to happen takes one of the kept places.
    coming = plan_prune(log, keys(log), keep=1, names=["other.bin"], now=NOW, incoming=1)
    assert seqs(coming.delete) == [7, 6]


def test_the_fleet_wins_over_keep_and_a_shared_content_stays() -> None:
    log = [version(n) for n in range(1, 5)] + [version(5, key="p/objects/4")]
    protected = {2: Protected(("installed on srv-1", "pinned on srv-2"))}
    plan = plan_prune(log, keys(log), keep=1, now=NOW, protected=protected)
    # 5 is kept; 4 names the same content, so that content stays; 2 is the fleet's.
    assert seqs(plan.delete) == [3, 1]
    assert [(v.seq, str(why)) for v, why in plan.kept_for_fleet] == [
        (2, "installed on srv-1, pinned on srv-2")
    ]


def test_keep_must_be_at_least_one() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        plan_prune([version(1)], {"p/objects/1"}, keep=0, now=NOW)


def test_orphans_are_unreferenced_and_old_enough() -> None:
    stored = [
        StoredObject("p/objects/1", 10, NOW - 3 * DAY),
        StoredObject("p/objects/orphan-old", 20, NOW - 2 * DAY),
        StoredObject("p/objects/orphan-new", 30, NOW - 60),
    ]
    plan = plan_orphans({"p/objects/1"}, stored, min_age=DAY, now=NOW)
    assert [o.key for o in plan.delete] == ["p/objects/orphan-old"]
    assert [o.key for o in plan.too_young] == ["p/objects/orphan-new"]
    assert plan.bytes == 20


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("30min", 1800), ("12h", 43200), ("7d", 7 * DAY),
     ("2w", 14 * DAY), ("1.5h", 5400), (" 36H ", 36 * 3600)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1d", "7 days", "1e3s", "7d12h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text)
