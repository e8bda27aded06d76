"""Pure decisions about releases: which version should be current, where a rollback goes,
which releases to prune. Fed with plain data (version numbers), no files, no clock.

Versions are the log's sequence numbers: a higher number is a newer upload.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["held_back", "previous", "prune", "wanted"]


def wanted(
    available: Iterable[int], failed: Collection[int], hold: int | None
) -> int | None:
    """The version that should be current, or None for "leave things as they are".

    ``available``: every genuine version known for the release (in the log or kept on disk).
    A hold (an operator's rollback, or a Pin) names the version outright; a held version that
    failed its checks is not tried again, so the release stays where it is. Otherwise the
    newest version that has not failed wins.
    """
    if hold is not None:
        return None if hold in failed else hold
    return max((v for v in available if v not in failed), default=None)


def held_back(available: Iterable[int], failed: Collection[int], hold: int | None) -> list[int]:
    """Versions newer than a hold that would otherwise be installed (to say so in the log)."""
    if hold is None:
        return []
    return sorted(v for v in set(available) if v > hold and v not in failed)


def previous(current: int | None, kept: Iterable[int], failed: Collection[int]) -> int | None:
    """Where a rollback goes: the newest kept release older than ``current`` that did not
    fail. Rolling back again goes one further."""
    if current is None:
        return None
    return max((v for v in kept if v < current and v not in failed), default=None)


def prune(
    kept: Iterable[int], current: int | None, failed: Collection[int], keep: int
) -> list[int]:
    """Releases to remove so that ``keep`` remain, oldest first; never the current one nor
    the one a rollback would go to (so ``keep = 1`` still leaves those two)."""
    kept = set(kept)
    protected = {v for v in (current, previous(current, kept, failed)) if v in kept}
    others = sorted(kept - protected, reverse=True)
    room = max(keep - len(protected), 0)
    return sorted(others[room:])
