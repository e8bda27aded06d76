"""The conditional-create probe's decision (pure), and the probe on a directory store."""

from __future__ import annotations

from pathlib import Path

import pytest
from distsync.storage.local import LocalStore
from distsync.storage.probe import (
    ProbeInconclusive,
    Round,
    Verdict,
    probe_conditional_create,
    verdict,
)

ONE_WINNER = Round((True, False), False)
REFUSED = "S3 bucket b: cannot create k: NotImplemented (HTTP 501)"


def test_one_winner_every_round_is_atomic() -> None:
    assert verdict([ONE_WINNER, Round((False, True), False)] * 4) is Verdict.ATOMIC


def test_two_winners_in_any_round_is_not_atomic() -> None:
    assert verdict([ONE_WINNER] * 7 + [Round((True, True), False)]) is Verdict.NOT_ATOMIC
    # A store that loses races also tends to fail the odd request: still not atomic.
    assert verdict([Round((True, True), REFUSED), ONE_WINNER]) is Verdict.NOT_ATOMIC


def test_a_store_that_refuses_every_conditional_create_has_none() -> None:
    assert verdict([Round((REFUSED, REFUSED), REFUSED)] * 3) is Verdict.NO_CONDITIONAL_CREATE


def test_a_store_that_ignores_the_condition_has_none() -> None:
    # Both "won" sequentially is impossible to tell from a race; the repeat is not.
    assert verdict([Round((True, False), True)]) is Verdict.NO_CONDITIONAL_CREATE


@pytest.mark.parametrize(
    "rounds",
    [
        [ONE_WINNER, Round((REFUSED, False), False)],  # some failures: proves nothing
        [Round((False, False), False)],  # nobody won a fresh key
    ],
)
def test_anything_else_is_inconclusive_not_a_guess(rounds: list[Round]) -> None:
    with pytest.raises(ProbeInconclusive) as caught:
        verdict(rounds)
    assert caught.value.exit_code == 4


def test_no_rounds_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        verdict([])


def test_a_directory_store_is_atomic(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert probe_conditional_create(store, "distsync/v3/") is Verdict.ATOMIC
