"""Halt records: an operator's ``distsync rollout --halt`` / ``--continue``.

One sealed record per version at ``{prefix}rollout/<version, 20 digits>`` (distsync.sealed,
"v3 halt"): the key names a log entry's number, never an artifact or group name. The body
says whether the rollout of that version is halted, who wrote it (the uploader's identity)
and when; ``--continue`` writes ``halted: false`` over it, since an uploader may not be
able to delete objects. Daemons read it only for a version whose rollout has waves, with
the status records the gate reads anyway.

Like manifests, a halt record is signed by the uploader's ``SigningKey`` over its sealed bytes
and its key (``distsync.signed``); a reader whose config trusts signers rejects any other,
so a server's config (which holds the secret) can neither halt nor continue a rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from distsync.errors import FormatError, NotFoundError
from distsync.logorder import leaf_of
from distsync.sealed import RecordKind, open_sealed, seal_record_body
from distsync.signed import Trust, check_signed, sign_sealed
from distsync.storage.base import Store

if TYPE_CHECKING:
    from distsync.crypto.signing import SigningKey

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
    def __init__(
        self,
        store: Store,
        prefix: str,
        secret: bytes,
        *,
        trust: Trust,
        signer: SigningKey | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix + HALT_DIR
        self._secret = secret
        self.trust = trust
        self._signer = signer

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
        sealed = seal_record_body(HALT_RECORD, self._secret, key, body)
        if self._signer is not None:
            sealed = sign_sealed(self._signer, key, sealed)
        self.store.put(key, sealed)

    def read(self, name: str, seq: int) -> Halt | None:
        """The record of version ``seq`` of ``name``, or None. IntegrityError when it is not
        genuine or not signed by a signer ``trust`` names (when it names any); FormatError
        when it is malformed or about another version."""
        key = self.key(seq)
        try:
            data = self.store.get(key, limit=HALT_RECORD.max_size)
        except NotFoundError:
            return None
        raw = open_sealed(
            HALT_RECORD, self._secret, key, check_signed(key, data, self.trust, HALT_RECORD.noun)
        )
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
