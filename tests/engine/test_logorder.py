"""The pure rules of the log's two layouts: positions, version ids, the look-back window.

The last tests run a model of racing uploaders and polling readers on a store whose listings
show a new key only some steps after it was written, and check that every reader reads every
upload, with the window, and that readers lose uploads without it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from distsync.logorder import (
    LOOK_BACK,
    MAX_SEQ,
    TAGGED,
    SeenWindow,
    claim_reaches_readers,
    is_position,
    leaf_of,
    listing_floor,
    parse_version_id,
    position,
    position_of_leaf,
    seq_of,
    version_id,
)

TAG_MAX = (1 << 48) - 1


def test_positions_order_entries_by_seq_then_tag() -> None:
    entries = [(2, 0), (1, TAG_MAX), (1, 5), (10, 0), (1, 0), (2, 1)]
    by_position = sorted(entries, key=lambda e: position(*e))
    assert by_position == sorted(entries)


def test_the_atomic_layouts_positions_are_its_sequence_numbers() -> None:
    assert [position(seq) for seq in (0, 1, 41, MAX_SEQ)] == [0, 1, 41, MAX_SEQ]
    # Every tagged position is above every sequence number: the layouts never share one.
    assert position(0, 0) == TAGGED > position(MAX_SEQ)


@pytest.mark.parametrize(
    ("seq", "tag", "text", "leaf"),
    [
        (41, None, "41", "00000000000000000041"),
        (41, 0x9F3AC2E07B5D, "41.9f3ac2e07b5d", "00000000000000000041-9f3ac2e07b5d"),
        (7, 1, "7.000000000001", "00000000000000000007-000000000001"),
        (MAX_SEQ, TAG_MAX, f"{MAX_SEQ}.ffffffffffff", f"{MAX_SEQ}-ffffffffffff"),
    ],
)
def test_version_ids_and_leaves_round_trip(seq: int, tag: int | None, text: str, leaf: str) -> None:
    pos = position(seq, tag)
    assert version_id(pos) == text and parse_version_id(text) == pos
    assert leaf_of(pos) == leaf and position_of_leaf(leaf) == pos
    assert seq_of(pos) == seq


def test_a_version_id_with_leading_zeros_names_the_same_entry() -> None:
    assert parse_version_id("0042") == 42
    assert parse_version_id("0042.00000000000a") == position(42, 10)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x",
        "41.",
        ".9f3ac2e07b5d",
        "41.9f3ac2e07b5",  # 11 hex digits
        "41.9f3ac2e07b5d0",
        "41.9F3AC2E07B5D",  # tags are lower case: one spelling per entry
        "41-9f3ac2e07b5d",
        "1" * 21,
        "\u0664\u0661",  # Arabic-Indic digits: isdigit() says yes, a version id says no
        " 41",
        "+41",
    ],
)
def test_what_is_not_a_version_id(text: str) -> None:
    assert parse_version_id(text) is None


@pytest.mark.parametrize(
    "leaf",
    [
        "41",
        "0" * 19 + "41",
        "0" * 21,
        "0" * 20 + "-",
        "0" * 20 + "-abc",
        "0" * 20 + "-x" * 6,
        "0" * 20 + ".9f3ac2e07b5d",  # the version id's separator is not the key's
    ],
)
def test_what_is_not_a_log_leaf(leaf: str) -> None:
    assert position_of_leaf(leaf) is None


def test_out_of_range_positions_are_refused() -> None:
    for bad in (-1, True, 1.0, "1", position(MAX_SEQ, TAG_MAX) + 1):
        assert not is_position(bad)
    with pytest.raises(ValueError):
        position(MAX_SEQ + 1)
    with pytest.raises(ValueError):
        position(1, 1 << 48)
    with pytest.raises(ValueError):
        version_id(-1)


def test_the_listing_floor_and_the_uploaders_check_agree() -> None:
    cursor = position(100, 7)
    assert listing_floor(cursor, 64) == 36
    assert listing_floor(position(3, 1), 64) == 0
    own = position(36, 0)
    # A claim whose sequence number the newest reader's floor still reaches is safe ...
    assert claim_reaches_readers(own, 100, 64) and listing_floor(cursor, 64) <= seq_of(own)
    # ... one entry further and it is not.
    assert not claim_reaches_readers(own, 101, 64)


def test_the_seen_window_forgets_what_falls_below_the_floor() -> None:
    window = SeenWindow(4)
    window.note([position(1, 1), position(2, 1), position(5, 1)], position(5, 1))
    assert not window.is_new(position(2, 1)) and window.is_new(position(2, 2))
    window.note([position(9, 3)], position(9, 3))
    assert window.seen == {position(5, 1), position(9, 3)}
    atomic = SeenWindow(0)
    atomic.note([3, 4], 4)
    assert atomic.seen == set()


# -- the model -------------------------------------------------------------------------------


@dataclass
class Store:
    """Keys that become visible to listings ``lag`` steps after they are written."""

    written: dict[int, int] = field(default_factory=dict)  # position -> step visible from

    def listing(self, now: int, floor_seq: int) -> list[int]:
        return sorted(p for p, at in self.written.items() if at <= now and seq_of(p) >= floor_seq)


@dataclass
class Uploader:
    rng: random.Random
    max_lag: int
    look_back: int
    check: bool = True  # claim again when the log moved past the window
    state: str = "list"
    seq: int = 0
    own: int | None = None
    done: int | None = None  # the position whose claim passed the check

    def step(self, store: Store, now: int) -> None:
        if self.state == "list":
            self.seq = max((seq_of(p) for p in store.listing(now, 0)), default=0) + 1
            self.state = "write"
        elif self.state == "write":
            self.own = position(self.seq, self.rng.getrandbits(48))
            store.written[self.own] = now + self.rng.randint(0, self.max_lag)
            self.state = "confirm"
        elif self.state == "confirm":
            assert self.own is not None
            listed = store.listing(now, seq_of(self.own))
            if self.own not in listed:
                return  # not listed yet: look again later
            newest = max(seq_of(p) for p in listed)
            if not self.check or claim_reaches_readers(self.own, newest, self.look_back):
                self.done, self.state = self.own, "idle"
            else:
                self.state = "list"  # the log moved on too far: claim again


@dataclass
class Reader:
    look_back: int | None  # None: list only after the cursor, as on the atomic layout
    cursor: int = 0
    read: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.window = SeenWindow(self.look_back or 0)

    def poll(self, store: Store, now: int) -> None:
        if self.look_back is None:
            new = [p for p in store.listing(now, 0) if p > self.cursor]
        else:
            found = store.listing(now, listing_floor(self.cursor, self.look_back))
            new = [p for p in found if self.window.is_new(p)]
        self.read.update(new)
        self.cursor = max([self.cursor, *new])
        self.window.note(new, self.cursor)


def run_model(
    seed: int,
    look_back: int | None,
    *,
    check: bool = True,
    uploads: int = 60,
    max_lag: int = 12,
) -> list[int]:
    """Uploads that some reader never read (empty: nothing lost)."""
    rng = random.Random(seed)
    store = Store()
    readers = [Reader(look_back) for _ in range(3)]
    pending = [Uploader(rng, max_lag, look_back or 0, check) for _ in range(uploads)]
    running: list[Uploader] = []
    finished: list[Uploader] = []
    now = 0
    while pending or running:
        now += 1
        while pending and len(running) < 6 and rng.random() < 0.5:
            running.append(pending.pop())  # up to six uploads race at a time
        for actor in rng.sample(running + readers, len(running) + len(readers)):
            if isinstance(actor, Reader):
                if rng.random() < 0.3:
                    actor.poll(store, now)
            else:
                actor.step(store, now)
        finished += [u for u in running if u.state == "idle"]
        running = [u for u in running if u.state != "idle"]
        assert now < 100_000, "the model did not finish"
    for reader in readers:  # everything is visible by now: a last poll each
        reader.poll(store, now + max_lag + 1)
    return [
        u.done
        for u in finished
        if u.done is not None and any(u.done not in r.read for r in readers)
    ]


@pytest.mark.parametrize("seed", range(40))
def test_with_the_window_no_reader_misses_an_upload(seed: int) -> None:
    assert run_model(seed, look_back=8) == []


def test_a_window_smaller_than_the_lag_still_loses_nothing() -> None:
    """Listings lag by up to 40 steps, the window is 1: the uploaders' check claims again
    until a claim is listed within reach of every reader."""
    assert all(run_model(seed, look_back=1, max_lag=40) == [] for seed in range(20))


def test_without_the_uploaders_check_a_lagging_listing_loses_uploads() -> None:
    lost = sum(len(run_model(s, look_back=1, check=False, max_lag=40)) for s in range(20))
    assert lost > 0


def test_without_the_window_readers_miss_uploads() -> None:
    """The guard this module exists for: readers that list only after their cursor lose
    uploads that land behind it (a racing uploader with a lower tag, a lagging listing)."""
    lost = sum(len(run_model(seed, look_back=None, check=False)) for seed in range(20))
    assert lost > 0


def test_the_default_window_is_the_formats() -> None:
    assert LOOK_BACK == 64
