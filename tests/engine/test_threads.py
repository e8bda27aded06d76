"""Owned threads, store calls a stop request need not wait for, and the watchdog's heartbeat."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distsync.errors import StorageError
from distsync.heartbeat import Heartbeat
from distsync.storage.local import LocalStore
from distsync.threads import InterruptibleStore, OwnedThread, interruptible
from distsync.transfer.fetch import Interrupted


class HangingStore(LocalStore):
    """A directory store whose reads hang until released, or fail on request."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.fail = False

    def get(self, key: str, *args: Any, **kw: Any) -> bytes:
        self.release.wait(30)
        if self.fail:
            raise StorageError("the store said no")
        return b"answer"


@pytest.fixture
def hanging(tmp_path: Path) -> Iterator[HangingStore]:
    store = HangingStore(tmp_path)
    yield store
    store.release.set()


def test_a_stop_request_ends_a_call_the_store_never_answers(hanging: HangingStore) -> None:
    stop = threading.Event()
    answers: list[int] = []
    store = InterruptibleStore(hanging, stop.is_set, on_answer=lambda: answers.append(1))
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted, match="stopped while waiting for"):
        store.get("k")
    assert time.monotonic() - started < 2
    assert answers == []  # no answer came: no progress to report
    with pytest.raises(Interrupted, match="stopped before asking"):
        store.get("k")  # once stopped, nothing new is asked


def test_answers_and_errors_are_progress_and_pass_through(hanging: HangingStore) -> None:
    answers: list[int] = []
    store = InterruptibleStore(hanging, lambda: False, on_answer=lambda: answers.append(1))
    hanging.release.set()
    assert store.get("k") == b"answer"
    hanging.fail = True
    with pytest.raises(StorageError, match="said no"):
        store.get("k")
    assert answers == [1, 1]


def test_a_second_condition_is_not_a_second_layer(hanging: HangingStore) -> None:
    outer = InterruptibleStore(hanging, lambda: False)
    job_over = threading.Event()
    inner = interruptible(outer, job_over.is_set)
    assert inner.inner is hanging
    threading.Timer(0.3, job_over.set).start()
    with pytest.raises(Interrupted):
        inner.get("k")


def test_listing_goes_through_in_pages(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for i in range(2500):
        (tmp_path / f"k{i:05d}").write_bytes(b"")
    listed = list(InterruptibleStore(store, lambda: False).list_after("k", ""))
    assert listed == [f"k{i:05d}" for i in range(2500)]


def test_an_owned_thread_hands_its_outcome_to_the_owner() -> None:
    def work(cancelled: threading.Event) -> int:
        cancelled.wait(30)
        return 42

    thread = OwnedThread("t", work).start()
    assert thread.alive and thread.failure is None
    assert thread.stop(5) and thread.result() == 42

    def fail(cancelled: threading.Event) -> None:
        raise ValueError("boom")

    broken = OwnedThread("t", fail).start()
    assert broken.join(5)
    assert isinstance(broken.failure, ValueError)
    with pytest.raises(ValueError, match="boom"):
        broken.result()


def test_the_heartbeat_is_fresh_while_work_moves_or_a_silence_was_declared() -> None:
    beat = Heartbeat(last=0.0, allowance=10)
    assert beat.fresh(10) and not beat.fresh(10.1)
    beat.beat(8)
    assert beat.fresh(18) and not beat.fresh(18.5)
    beat.expect(18, 300)  # a hook may run this long
    assert beat.fresh(300) and not beat.fresh(319)
    assert beat.silent_for(319) == 311
    assert Heartbeat(last=0.0).fresh(1e9)  # no watchdog: no allowance
