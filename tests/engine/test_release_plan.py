"""The pure release decisions: which version, where a rollback goes, what Keep removes."""

from __future__ import annotations

from distsync.release import plan


def test_newest_version_that_has_not_failed_wins() -> None:
    assert plan.wanted({1, 2, 3}, failed=set(), hold=None) == 3
    assert plan.wanted({1, 2, 3}, failed={3}, hold=None) == 2
    assert plan.wanted({1}, failed={1}, hold=None) is None
    assert plan.wanted(set(), failed=set(), hold=None) is None


def test_a_hold_names_the_version_outright_but_never_a_failed_one() -> None:
    assert plan.wanted({1, 2, 3}, failed=set(), hold=1) == 1
    assert plan.wanted({1, 2, 3}, failed=set(), hold=7) == 7  # fetched if not at hand
    assert plan.wanted({1, 2, 3}, failed={1}, hold=1) is None  # stay where it is
    assert plan.held_back({1, 2, 3, 4}, failed={3}, hold=2) == [4]
    assert plan.held_back({1, 2}, failed=set(), hold=None) == []


def test_rollback_goes_to_the_newest_older_release_that_did_not_fail() -> None:
    assert plan.previous(5, kept={1, 3, 4, 5}, failed={4}) == 3
    assert plan.previous(3, kept={1, 3, 4, 5}, failed={4}) == 1  # once more: one further
    assert plan.previous(1, kept={1, 3}, failed=set()) is None
    assert plan.previous(None, kept={1, 3}, failed=set()) is None


def test_prune_keeps_n_and_never_current_or_previous() -> None:
    assert plan.prune({1, 2, 3, 4}, current=4, failed=set(), keep=2) == [1, 2]
    # The failed 2 goes before the older, healthy 1, which a rollback would choose.
    assert plan.prune({1, 2, 3}, current=3, failed={2}, keep=2) == [2]
    # Held back at 1 after a rollback: 1 is current, 3 the newest other.
    assert plan.prune({1, 2, 3}, current=1, failed=set(), keep=2) == [2]
    # Keep = 1 still leaves the release a rollback needs.
    assert plan.prune({1, 2, 3}, current=3, failed=set(), keep=1) == [1]
    assert plan.prune({1, 2}, current=None, failed=set(), keep=1) == [1]
    assert plan.prune(set(), current=None, failed=set(), keep=3) == []
