"""Does a store's create-if-absent hold when two writers race? (DESIGN §9)

The log of manifests can rest on ``Store.create`` only where the store makes it atomic: AWS
S3, MinIO, Ceph RGW, a directory (``link``). Native Swift accepts ``If-None-Match: *`` but two
racing creates of the same key can both succeed, and Swift 2.30's S3 API refuses the header
outright (501). Asking the store's name would guess; this module asks the store itself.

``probe_conditional_create`` is the I/O: a few rounds of two threads creating the same fresh
key at the same moment, then a third, sequential create of that key. ``verdict`` is the
decision, a plain function of what happened:

- ``ATOMIC``: every round had exactly one winner and the repeat was refused;
- ``NOT_ATOMIC``: in some round both racers won;
- ``NO_CONDITIONAL_CREATE``: the store refuses every conditional create (while a plain write
  works), or ignores the condition (the repeat of an existing key succeeded).

Anything else (some creates failed, others did not; no winner at all) proves nothing:
``verdict`` raises ``ProbeInconclusive`` rather than guess.
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Union

from distsync.errors import StorageError

__all__ = [
    "Outcome",
    "ProbeInconclusive",
    "Round",
    "Verdict",
    "probe_conditional_create",
    "verdict",
]


class Verdict(str, enum.Enum):
    ATOMIC = "atomic"
    NOT_ATOMIC = "not atomic"
    NO_CONDITIONAL_CREATE = "no conditional create"


class ProbeInconclusive(StorageError):
    """The probe's requests failed in a way that says nothing about the store's semantics."""


# One create's outcome: True (created), False (refused: the key exists), or the one-line
# error the store gave.
Outcome = Union[bool, str]


@dataclass(frozen=True)
class Round:
    racers: tuple[Outcome, Outcome]
    repeat: Outcome  # the sequential create of the same key after the race


def verdict(rounds: Sequence[Round]) -> Verdict:
    """What ``rounds`` of racing creates say about the store (pure)."""
    if not rounds:
        raise ValueError("no rounds to judge")
    outcomes = [o for r in rounds for o in (*r.racers, r.repeat)]
    errors = [o for o in outcomes if isinstance(o, str)]
    if len(errors) == len(outcomes):
        return Verdict.NO_CONDITIONAL_CREATE  # refused every time, e.g. s3api's 501
    if any(r.racers == (True, True) for r in rounds):
        return Verdict.NOT_ATOMIC
    if any(r.repeat is True for r in rounds):
        return Verdict.NO_CONDITIONAL_CREATE  # the condition is ignored
    if errors:
        raise ProbeInconclusive(f"the conditional-create probe saw errors: {errors[0]}")
    if all(sorted(r.racers, key=str) == [False, True] for r in rounds):
        return Verdict.ATOMIC
    raise ProbeInconclusive("the conditional-create probe saw a round with no winner")


class _Creator(Protocol):
    def create(self, key: str, data: bytes) -> bool: ...

    def put(self, key: str, data: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


def _attempt(store: _Creator, key: str, data: bytes) -> Outcome:
    try:
        return store.create(key, data)
    except StorageError as exc:
        return str(exc) or type(exc).__name__


def _race(store: _Creator, key: str) -> tuple[Outcome, Outcome]:
    """Two threads create ``key`` at the same moment, each with a body of its own."""
    outcomes: list[Outcome] = ["did not run", "did not run"]
    barrier = threading.Barrier(2)

    def racer(slot: int) -> None:
        body = os.urandom(32)
        barrier.wait(timeout=60)
        outcomes[slot] = _attempt(store, key, body)

    threads = [threading.Thread(target=racer, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes[0], outcomes[1]


def probe_conditional_create(store: _Creator, prefix: str, *, rounds: int = 8) -> Verdict:
    """Race two conditional creates of fresh keys under ``{prefix}probe/``, ``rounds`` times.

    The probe keys are removed again. With 8 rounds, a store
    whose racing creates both succeed even a third of the time is caught with probability
    above 96%; native Swift's both succeed in most tries.
    """
    base = f"{prefix}probe/{uuid.uuid4().hex}"
    written = [f"{base}-control"]
    store.put(written[0], b"")  # a plain write must work: else the store itself is failing
    results: list[Round] = []
    try:
        for n in range(rounds):
            key = f"{base}-{n:03d}"
            written.append(key)
            racers = _race(store, key)
            results.append(Round(racers, _attempt(store, key, os.urandom(32))))
    finally:
        for key in written:
            with contextlib.suppress(StorageError):
                store.delete(key)
    return verdict(results)
