"""Where things live in the bucket (DESIGN §6). Everything sits under one prefix::

    {prefix}store               the sealed store record: id, format, capabilities (store_record.py)
    {prefix}marker              rewritten after every upload: servers poll its version tag
    {prefix}log/{seq:020d}      encrypted manifests, one per upload, claimed by conditional create
    {prefix}objects/{random}    ciphertext of the artifacts (random ids, never names)
    {prefix}peers/{node id}     S3+BitTorrent: each daemon's encrypted address (swarm/peerbook.py)

The log's sequence numbers order uploads with no clock at all: an uploader claims the next
free number with a create-if-absent, and a lost race just claims the one after. Sequence
numbers are at most 20 digits (``MAX_SEQ``): a key any longer would sort among the others but
no reader would take it for a log entry, so no one may claim one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

__all__ = ["MAX_SEQ", "SEQ_DIGITS", "Layout"]

SEQ_DIGITS = 20
MAX_SEQ = 10**SEQ_DIGITS - 1


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

    def log_key(self, seq: int) -> str:
        if not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"log sequence number {seq} is outside 0..{MAX_SEQ}")
        return f"{self.log_prefix}{seq:0{SEQ_DIGITS}d}"

    def seq_of(self, key: str) -> int | None:
        """The sequence number of a log key, or None for anything else."""
        leaf = key[len(self.log_prefix) :] if key.startswith(self.log_prefix) else ""
        if len(leaf) == SEQ_DIGITS and leaf.isdigit() and leaf.isascii():
            return int(leaf)
        return None

    def new_object_key(self) -> str:
        return f"{self.objects_prefix}{uuid.uuid4().hex}"
