"""Where things live in the bucket (DESIGN §6). Everything sits under one prefix::

    {prefix}store               the sealed store record: id, format, capabilities (store_record.py)
    {prefix}marker              rewritten after every upload: servers poll its version tag
    {prefix}log/{seq:020d}      encrypted manifests, one per upload, claimed by conditional create
    {prefix}log/{seq:020d}-{tag}  the same on a store without atomic create (logorder.py)
    {prefix}objects/{random}    ciphertext of the artifacts (random ids, never names)
    {prefix}peers/{node id}     S3+BitTorrent: each daemon's encrypted address (swarm/peerbook.py)

The log's sequence numbers order uploads with no clock at all: an uploader claims the next
free number with a create-if-absent, and a lost race just claims the one after. Where the
store's create-if-absent is not atomic, each uploader writes a key of its own instead
(``distsync.logorder``: positions, version ids, the look-back window). Sequence numbers are at
most 20 digits (``MAX_SEQ``): a key any longer would sort among the others but no reader would
take it for a log entry, so no one may claim one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from distsync.logorder import MAX_SEQ, SEQ_DIGITS, leaf_of, position_of_leaf

__all__ = ["MAX_SEQ", "SEQ_DIGITS", "Layout"]


@dataclass(frozen=True)
class Layout:
    prefix: str = "distsync/v3/"

    @property
    def marker(self) -> str:
        return self.prefix + "marker"

    @property
    def store_record(self) -> str:
        return self.prefix + "store"

    @property
    def log_prefix(self) -> str:
        return self.prefix + "log/"

    @property
    def objects_prefix(self) -> str:
        return self.prefix + "objects/"

    def log_key(self, position: int) -> str:
        """The key of the log entry at ``position`` (its sequence number on the atomic log)."""
        return self.log_prefix + leaf_of(position)

    def position_of(self, key: str) -> int | None:
        """The position of a log key (either layout), or None for anything else."""
        if not key.startswith(self.log_prefix):
            return None
        return position_of_leaf(key[len(self.log_prefix) :])

    def log_listing_start(self, seq: int) -> str:
        """A ``list_after`` start that lists every log key of ``seq`` and above."""
        if seq <= 0:
            return self.log_prefix
        # "~" sorts after "-" and every digit: past all keys of seq - 1, before those of seq.
        return f"{self.log_prefix}{seq - 1:0{SEQ_DIGITS}d}~"

    def new_object_key(self) -> str:
        return f"{self.objects_prefix}{uuid.uuid4().hex}"
