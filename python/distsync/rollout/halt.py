"""Halt records: an operator's ``distsync rollout --halt`` / ``--continue``.

One sealed record per version at ``{prefix}rollout/<version, 20 digits>`` (distsync.sealed,
"v3 halt"): the key names a log entry's number, never an artifact or group name. The body
says whether the rollout of that version is halted, who wrote it (the uploader's identity)
and when; ``--continue`` writes ``halted: false`` over it, since an uploader may not be
able to delete objects. Daemons read it only for a version whose rollout has waves, with
the status records the gate reads anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from distsync.errors import FormatError, NotFoundError
from distsync.logorder import leaf_of
from distsync.sealed import RecordKind, open_sealed, seal_record_body
from distsync.storage.base import Store

__all__ = ["HALT_RECORD", "Halt", "HaltBoard"]

HALT_RECORD = RecordKind(
    magic=b"DSH3", purpose="v3 halt", label=b"distsync v3 halt", noun="halt record"
)
HALT_DIR = "rollout/"


@dataclass(frozen=True)
class Halt:
    name: str
    version: int
    halted: bool
    by: str
    at: float


class HaltBoard:
    def __init__(self, store: Store, prefix: str, secret: bytes) -> None:
        self.store = store
        self.prefix = prefix + HALT_DIR
        self._secret = secret

    def key(self, seq: int) -> str:
        return self.prefix + leaf_of(seq)  # the log entry's own leaf (logorder)

    def write(self, halt: Halt) -> None:
        key = self.key(halt.version)
        body = {
            "name": halt.name,
            "version": halt.version,
            "halted": halt.halted,
            "by": halt.by,
            "at": halt.at,
        }
        self.store.put(key, seal_record_body(HALT_RECORD, self._secret, key, body))

    def read(self, name: str, seq: int) -> Halt | None:
        """The record of version ``seq`` of ``name``, or None. IntegrityError when it is not
        genuine; FormatError when it is malformed or about another version."""
        key = self.key(seq)
        try:
            data = self.store.get(key, limit=HALT_RECORD.max_size)
        except NotFoundError:
            return None
        raw = open_sealed(HALT_RECORD, self._secret, key, data)
        try:
            halt = Halt(
                name=raw["name"],
                version=raw["version"],
                halted=raw["halted"],
                by=raw["by"],
                at=raw["at"],
            )
            types_ok = (
                isinstance(halt.name, str)
                and isinstance(halt.by, str)
                and halt.by.isprintable()
                and len(halt.by) <= 255
                and isinstance(halt.halted, bool)
                and isinstance(halt.version, int)
                and isinstance(halt.at, (int, float))
            )
        except KeyError:
            types_ok = False
        if not types_ok or len(raw) != 5:
            raise FormatError(f"{key}: authenticated halt record is malformed")
        if (halt.name, halt.version) != (name, seq):
            raise FormatError(f"{key}: halt record names another version")
        return halt
