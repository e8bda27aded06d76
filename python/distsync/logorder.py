"""Where an entry stands in the log of manifests, and how readers find every entry of a log
on a store without atomic create (DESIGN §6, §9). Pure: no I/O, no clock, no randomness.

The log has two layouts; the store record's ``atomic_create`` capability (probed by setup)
says which one a store's writers use:

    atomic   {prefix}log/{seq:020d}           claimed with a conditional create: one per seq
    tagged   {prefix}log/{seq:020d}-{tag}     tag: 12 random lowercase hex digits per claim,
                                              written with a plain PUT; a seq may repeat

On the tagged layout every uploader writes a key no other uploader writes (its random tag),
so no upload can overwrite another whatever the store does with concurrent writes. The price
is that two uploads racing for the same sequence number both keep it: entries are ordered by
``(seq, tag)``, and an entry can land *behind* a reader's cursor, so readers list a look-back
window below it (``listing_floor``) and remember what they read there (``SeenWindow``).

Every entry has a *position*: one integer that orders entries exactly as ``(seq, tag)``. On
the atomic layout it is the sequence number itself (so state written before the tagged
layout means the same); a tagged entry's is ``TAGGED + seq * 2**48 + tag``, above every
sequence number. The daemon's cursor, its installed versions, its rejections and the
releases' versions are all positions: "newer" is ``>``, whichever layout the store has.
A *version id*, what users read and type (``distsync list``, ``--version``, ``Pin``), is
``41`` on the atomic layout and ``41.9f3ac2e07b5d`` on the tagged one (a ``.``, not the key's
``-``: release directories are named ``<version id>-<name>`` and split at the first ``-``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Python 3.10+; annotations are not evaluated at run time
    from typing import TypeGuard

__all__ = [
    "LOOK_BACK",
    "MAX_SEQ",
    "SEQ_DIGITS",
    "TAGGED",
    "TAG_BITS",
    "SeenWindow",
    "claim_reaches_readers",
    "is_position",
    "leaf_of",
    "listing_floor",
    "parse_version_id",
    "position",
    "position_of_leaf",
    "seq_of",
    "version_id",
]

SEQ_DIGITS = 20
MAX_SEQ = 10**SEQ_DIGITS - 1
TAG_BITS = 48
_TAG_DIGITS = TAG_BITS // 4
_TAG_SPAN = 1 << TAG_BITS
# Tagged positions start above every sequence number: the two layouts never share one.
TAGGED = MAX_SEQ + 1
_MAX_POSITION = TAGGED + (MAX_SEQ + 1) * _TAG_SPAN - 1
# How many sequence numbers below its cursor a reader of the tagged layout lists again. Part
# of the format: uploaders check their claim against the same number (claim_reaches_readers).
LOOK_BACK = 64

_LEAF = re.compile(rf"([0-9]{{{SEQ_DIGITS}}})(?:-([0-9a-f]{{{_TAG_DIGITS}}}))?")
_VERSION_ID = re.compile(rf"([0-9]{{1,{SEQ_DIGITS}}})(?:\.([0-9a-f]{{{_TAG_DIGITS}}}))?")


def position(seq: int, tag: int | None = None) -> int:
    """The position of the entry ``seq`` (atomic layout) or ``seq.tag`` (tagged layout)."""
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"log sequence number {seq} is outside 0..{MAX_SEQ}")
    if tag is None:
        return int(seq)
    if not 0 <= tag < _TAG_SPAN:
        raise ValueError(f"log tag {tag} is outside 0..{_TAG_SPAN - 1}")
    return int(TAGGED + seq * _TAG_SPAN + tag)


def is_position(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_POSITION


def _split(pos: int) -> tuple[int, int | None]:
    if not is_position(pos):
        raise ValueError(f"{pos!r} is not a log position")
    if pos < TAGGED:
        return pos, None
    seq, tag = divmod(pos - TAGGED, _TAG_SPAN)
    return int(seq), int(tag)


def seq_of(pos: int) -> int:
    """The sequence number of the entry at ``pos``."""
    return _split(pos)[0]


def leaf_of(pos: int) -> str:
    """The log key's last part (after ``log/``) of the entry at ``pos``."""
    seq, tag = _split(pos)
    return f"{seq:0{SEQ_DIGITS}d}" if tag is None else f"{seq:0{SEQ_DIGITS}d}-{tag:0{_TAG_DIGITS}x}"


def position_of_leaf(leaf: str) -> int | None:
    """The position a log key's last part names, or None when it is no log key of either
    layout (a reader never takes such a key for an entry)."""
    match = _LEAF.fullmatch(leaf)
    if match is None:
        return None
    seq, tag = match.groups()
    return position(int(seq), None if tag is None else int(tag, 16))


def version_id(pos: int) -> str:
    """What users read and type: ``41``, or ``41.9f3ac2e07b5d`` on the tagged layout."""
    seq, tag = _split(pos)
    return str(seq) if tag is None else f"{seq}.{tag:0{_TAG_DIGITS}x}"


def parse_version_id(text: str) -> int | None:
    """The position a version id names, or None when ``text`` is not one."""
    match = _VERSION_ID.fullmatch(text) if text.isascii() else None
    if match is None:
        return None
    seq, tag = match.groups()
    return position(int(seq), None if tag is None else int(tag, 16))


def listing_floor(cursor: int, look_back: int) -> int:
    """The lowest sequence number a reader whose cursor is at ``cursor`` lists again.

    With ``look_back`` 0 (the atomic layout, where no entry can land behind the cursor) the
    reader lists only after its cursor; callers do not ask this then.
    """
    return max(0, seq_of(cursor) - look_back)


def claim_reaches_readers(own: int, newest_seq: int, look_back: int) -> bool:
    """Whether a tagged entry at ``own``, once it is listed, is found by every reader.

    A reader's cursor never passes an entry it has not listed, so when ``own`` is first
    listed no reader's cursor is past ``newest_seq``, the highest sequence number listed in
    the same listing; each reader's next listing then starts at ``cursor - look_back`` or
    lower. If that is not at or below ``own``'s sequence number (the log moved on by more
    than the window while the entry was being written or became visible), the uploader
    claims again.
    """
    return newest_seq - seq_of(own) <= look_back


@dataclass
class SeenWindow:
    """The genuine entries a reader of the tagged layout has read at or above its listing
    floor, so that listing the window again reads only what is new there.

    Entries below the floor are forgotten: the reader lists no lower, and what it does not
    list it cannot mistake for new. Bounded by the entries within ``look_back`` sequence
    numbers of the cursor, which only uploaders holding the secret can add.
    """

    look_back: int
    seen: set[int] = field(default_factory=set)

    def is_new(self, pos: int) -> bool:
        return pos not in self.seen

    def note(self, found: Iterable[int], cursor: int) -> None:
        """Remember ``found`` and forget what fell below the floor of ``cursor``."""
        if self.look_back <= 0:
            self.seen.clear()
            return
        floor = listing_floor(cursor, self.look_back)
        self.seen = {pos for pos in (*self.seen, *found) if seq_of(pos) >= floor}
