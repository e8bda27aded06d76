"""The swarm's pure decisions: who reads what from the store, who helps, when to web-seed."""

from __future__ import annotations

from collections import Counter

from distsync.swarm.plan import (
    HelpPlan,
    ReaderChoice,
    WebSeedClock,
    helper_of,
    rendezvous,
    share_of,
    unclaimed,
    web_seed_wait,
)


def test_every_node_computes_one_order_per_artifact() -> None:
    nodes = [f"{i:032x}" for i in range(50)]
    first = rendezvous(nodes, "aa" * 20)
    assert first == rendezvous(list(reversed(nodes)), "aa" * 20)
    assert first != rendezvous(nodes, "bb" * 20)  # another artifact, other readers
    assert rendezvous(nodes[1:], "aa" * 20) == [n for n in first if n != nodes[0]]


def _walk(choice: ReaderChoice, live: set[str]) -> list[list[str]]:
    """Answer ``wanted()`` as a store would; returns the batches read."""
    batches = []
    while batch := choice.wanted():
        batches.append(batch)
        for node in batch:
            choice.found(node, node in live)
    return batches


def test_the_readers_are_the_first_live_nodes_and_every_node_agrees() -> None:
    nodes = [f"{i:032x}" for i in range(30)]
    ranked = rendezvous(nodes, "cc" * 20)
    dead = set(ranked[1:6:2])  # a few of the first ones are gone
    live = set(nodes) - dead
    choices = {me: ReaderChoice(ranked, me, first=4, limit=64) for me in sorted(live)}
    for choice in choices.values():
        _walk(choice, live)
    chosen = {tuple(choice.chosen) for choice in choices.values()}
    assert chosen == {tuple([n for n in ranked if n in live][:4])}
    positions = sorted(choice.position for choice in choices.values())
    assert positions == list(range(len(live)))  # one place each, the readers first


def test_finding_the_readers_reads_few_records_in_few_rounds() -> None:
    nodes = [f"{i:032x}" for i in range(1000)]
    ranked = rendezvous(nodes, "dd" * 20)
    choice = ReaderChoice(ranked, ranked[500], first=8, limit=64)
    batches = _walk(choice, set(nodes))
    assert len(batches) == 1 and len(batches[0]) == 8 + 4  # the first 8 and 4 spare
    assert choice.chosen == ranked[:8] and choice.position == 500


def test_junk_that_looks_like_node_ids_costs_at_most_the_read_limit() -> None:
    junk = [f"{i:032x}" for i in range(60_000)]
    me = "f" * 32
    ranked = rendezvous([*junk, me], "ee" * 20)
    choice = ReaderChoice(ranked, me, first=8, limit=64)
    batches = _walk(choice, {me})
    assert sum(map(len, batches)) == 64
    assert choice.chosen == ([me] if me in ranked[:65] else [])


def test_shares_interleave_and_only_readers_have_one() -> None:
    chosen = ["a" * 32, "b" * 32]
    assert [list(share_of(chosen, n, 7)) for n in chosen] == [[0, 2, 4, 6], [1, 3, 5]]
    assert not share_of(chosen, "f" * 32, 7)


def test_web_seed_waits_come_in_waves_by_position() -> None:
    assert [web_seed_wait(p, 2, 10.0) for p in range(8)] == [10, 10, 20, 20, 30, 30, 30, 30]
    assert web_seed_wait(0, 0, 10.0) == 10  # no readers: everyone is in the first wave


def test_helpers_split_a_slow_readers_tail_and_leave_it_what_it_is_about_to_read() -> None:
    readers = 4
    pieces = range(4 * 40)
    helpers = {p: helper_of(p, readers) for p in pieces}
    assert all(helpers[p] != p % readers for p in pieces)  # never the owner itself
    for owner in range(readers):  # the others share its pieces evenly
        counts = Counter(helpers[p] for p in pieces if p % readers == owner)
        assert sorted(counts.values()) == [13, 13, 14]

    slow = [p for p in pieces if p % readers == 1]  # owner 1 has read nothing yet
    plans = [HelpPlan(readers, me, started=0.0) for me in (0, 2, 3)]
    assert all(plan.next(slow, now=0.1) is None for plan in plans)  # its pace is unknown yet
    late = slow[6:]  # half a second later it has read 6 of its 40: 12 per s, 6 per _RACE
    picks = [plan.next(late, now=0.5) for plan in plans]
    assert len(set(picks)) == 3 and all(p in late[6:] for p in picks)
    assert max(picks) == late[-1]  # from the back
    fast = slow[30:]  # 60 per second: what it has left, it reads itself within _RACE
    plan = HelpPlan(readers, 0, started=0.0)
    plan.next(slow, 0.0)
    assert plan.next(fast, 0.5) is None
    dead = HelpPlan(readers, 0, started=0.0)  # its next piece never comes: no reserve
    assert dead.next(slow, 0.0) is None
    assert dead.next(slow, 2.5) == max(p for p in slow if helper_of(p, readers) == 0)


def test_helpers_only_take_what_no_peer_has_and_nobody_sends() -> None:
    asked: list[int] = []

    def have(piece: int) -> bool:
        asked.append(piece)
        return piece == 5

    # 0-1 a peer has, 2 is on its way to us, 5 we have: 3, 4 and 6 are unclaimed.
    assert unclaimed(7, [1, 2, 0, 0, 0, 0], [2], have) == [3, 4, 6]
    assert asked == [3, 4, 5, 6]  # only the pieces still in question


def test_web_seed_clock_waits_for_silence_then_gives_up() -> None:
    clock = WebSeedClock(wait=5, stall_seconds=8, started=0)
    assert clock.observe(4, 0) is None
    assert clock.observe(8, 100) is None  # progress resets the silence
    assert clock.observe(12.9, 100) is None
    assert clock.observe(13, 100) == "web_seed"
    clock.web_seed_added(13)
    assert clock.observe(20, 100) is None
    assert clock.observe(21, 100) == "stalled"
    assert WebSeedClock(wait=0, stall_seconds=1, started=0).observe(0, 0) == "web_seed"
