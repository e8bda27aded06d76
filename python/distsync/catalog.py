"""The global log of manifests: append (claim the next sequence number) and read it back.

Reading costs work in proportion to what is new: the store lists only keys after the last
sequence number a reader has seen. The marker's content is a hint of the newest number for
uploaders. It is not trusted: a hint is used only when it is a 20-digit number whose log entry
opens as a genuine manifest, so a forged one costs at most a longer listing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from distsync.config import Config
from distsync.crypto.signing import SigningKey
from distsync.errors import (
    IntegrityError,
    NotFoundError,
    StorageError,
    UnknownArtifactError,
    UsageError,
)
from distsync.layout import MAX_SEQ, SEQ_DIGITS, Layout
from distsync.manifest import Manifest, Version, check_manifest, open_manifest, seal_manifest
from distsync.signed import Trust
from distsync.storage.base import Store
from distsync.store_record import StoreRecord, verify_store

__all__ = ["Catalog", "Rejected"]

log = logging.getLogger(__name__)

_MAX_CLAIM_ATTEMPTS = 1000


@dataclass(frozen=True)
class Rejected:
    """A log entry that failed verification; readers skip it and say so."""

    seq: int
    key: str
    reason: str


class Catalog:
    """The log as one config sees it: ``trust`` decides which entries are genuine (signed by
    a trusted signer, when it names any), ``signer`` signs what this config appends."""

    def __init__(
        self,
        store: Store,
        layout: Layout,
        secret: bytes,
        record: StoreRecord | None = None,
        *,
        trust: Trust,
        signer: SigningKey | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.record = record
        self.trust = trust
        self._secret = secret
        self._signer = signer

    @classmethod
    def open(cls, cfg: Config) -> Catalog:
        """The log of the store a configuration names (what the CLI and the modules use).

        Checks the store record first: a config whose secret is not the store's fails here
        (IntegrityError) instead of seeing what looks like an empty store.
        """
        from distsync.storage import open_store

        warning = cfg.unsigned_warning()
        if warning is not None:
            log.warning("%s", warning)
        store, layout = open_store(cfg), Layout(cfg.prefix)
        record = verify_store(store, layout, cfg.secret)
        return cls(store, layout, cfg.secret, record, trust=cfg.trust, signer=cfg.signing_key)

    # -- writing ------------------------------------------------------------------------

    def _hint(self) -> int:
        """The marker's hint of the newest entry if that entry is genuine, else 0."""
        try:
            raw = json.loads(self.store.get(self.layout.marker))
        except (NotFoundError, ValueError, RecursionError):
            return 0
        hint = raw.get("latest") if isinstance(raw, dict) else None
        if isinstance(hint, bool) or not isinstance(hint, int) or not 0 < hint <= MAX_SEQ:
            return 0
        try:
            self.read(hint)
        except (IntegrityError, NotFoundError):
            log.debug("the marker's hint %d is not a genuine log entry; listing the log", hint)
            return 0
        return hint

    def _last_seq_from(self, seq: int) -> int:
        """The highest number any log key after ``seq`` holds: genuine or not, it is taken."""
        last = seq
        for found in self.log_seqs_after(seq):
            last = max(last, found)
        return last

    def append(self, manifest: Manifest) -> Version:
        """Claim the next free sequence number for ``manifest`` and announce it."""
        check_manifest(manifest, self.layout.objects_prefix)
        seq = self._last_seq_from(self._hint()) + 1
        for _attempt in range(_MAX_CLAIM_ATTEMPTS):
            if seq > MAX_SEQ:
                # A longer key would be invisible to every reader: never claim one.
                raise StorageError(
                    f"{self.store.description}: no log sequence number is free after "
                    f"{self.layout.log_key(MAX_SEQ)} (remove that entry if it is not genuine)"
                )
            key = self.layout.log_key(seq)
            if self.store.create(key, self._seal_entry(key, manifest)):
                self.announce(seq)
                return Version(seq, key, manifest)
            seq = self._last_seq_from(seq) + 1  # lost a race: someone else took it
        raise StorageError(f"could not claim a log entry after {_MAX_CLAIM_ATTEMPTS} attempts")

    def _seal_entry(self, key: str, manifest: Manifest) -> bytes:
        """The bytes of a new log entry at ``key``: signed, if this config has a key."""
        if self._signer is None and self.trust.required:
            # Readers with this trust would reject it: never write what the fleet refuses.
            raise UsageError(
                "this config trusts only signed uploads but has no SigningKey to sign with: "
                "upload with the uploader's config"
            )
        return seal_manifest(self._secret, key, manifest, self._signer)

    def announce(self, seq: int) -> None:
        """Rewrite the marker so that pollers see a new version tag."""
        body = {"latest": seq, "nonce": os.urandom(8).hex()}
        self.store.put(self.layout.marker, json.dumps(body).encode())

    # -- reading ------------------------------------------------------------------------

    def read(self, seq: int) -> Version:
        """The genuine manifest at ``seq``: NotFoundError if there is none, IntegrityError
        if what is there fails verification."""
        key = self.layout.log_key(seq)
        return Version(seq, key, self._open_entry(key, self.store.get(key)))

    def _open_entry(self, key: str, data: bytes) -> Manifest:
        """The manifest in the log entry ``data`` at ``key``, if this config trusts it."""
        return open_manifest(
            self._secret, key, data, objects_prefix=self.layout.objects_prefix, trust=self.trust
        )

    def read_entry(self, seq: int) -> Version | Rejected | None:
        """The entry at ``seq``: a Version, Rejected when it fails verification, None when
        it is not (or no longer) there."""
        try:
            return self.read(seq)
        except IntegrityError as exc:
            return Rejected(seq, self.layout.log_key(seq), str(exc))
        except NotFoundError:
            return None

    def log_seqs_after(self, seq: int) -> Iterator[int]:
        """The sequence numbers of the log keys after ``seq``, in order (listing only)."""
        for key in self.store.list_after(self.layout.log_prefix, self.layout.log_key(seq)):
            found = self.layout.seq_of(key)
            if found is not None:
                yield found

    def entries_after(self, seq: int) -> Iterator[Version | Rejected]:
        """Every log entry after ``seq``, oldest first; bad ones as ``Rejected``."""
        for found in self.log_seqs_after(seq):
            entry = self.read_entry(found)
            if entry is not None:
                yield entry

    def versions(self) -> list[Version]:
        """All genuine versions, newest first."""
        found = [entry for entry in self.entries_after(0) if isinstance(entry, Version)]
        return sorted(found, key=lambda version: version.seq, reverse=True)

    def newest(self, name: str) -> Version:
        """The newest genuine version of ``name``: the log is listed whole (keys only) and
        read from its end, so a name uploaded recently costs a few reads, not one per entry."""
        for seq in reversed(list(self.log_seqs_after(0))):
            entry = self.read_entry(seq)
            if isinstance(entry, Version) and entry.manifest.name == name:
                return entry
        raise UnknownArtifactError(f"no artifact named {name!r} in {self.store.description}")

    def find(self, name: str, version_id: str) -> Version:
        if not (version_id.isascii() and version_id.isdigit() and len(version_id) <= SEQ_DIGITS):
            raise UsageError(
                f"{version_id!r} is not a version id (version ids are the numbers "
                "`distsync list` shows)"
            )
        try:
            version = self.read(int(version_id))
        except NotFoundError:
            raise UnknownArtifactError(
                f"no version {version_id} in {self.store.description}"
            ) from None
        if version.manifest.name != name:
            raise UnknownArtifactError(
                f"version {version_id} is {version.manifest.name!r}, not {name!r}"
            )
        return version
