"""The global log of manifests: append (claim a place) and read it back.

Two layouts, chosen per store by the store record's ``atomic_create`` capability
(``distsync.logorder``): where the store's create-if-absent is atomic an uploader claims the
next free sequence number with it; where it is not (native Swift, Swift's S3 API), every
uploader writes a key of its own (``log/<seq>-<tag>``), confirms that the store lists it close
enough to the log's end for every reader's look-back window to reach it, and claims again if
not. A store without a record keeps the atomic layout.

Reading costs work in proportion to what is new: the store lists only keys after the last
entry a reader has seen (on the tagged layout, after its look-back floor). The marker's
content is a hint of the newest entry for uploaders. It is not trusted: a hint is used only
when it names a log entry that opens as a genuine manifest, so a forged one costs at most a
longer listing.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from distsync.config import Config
from distsync.crypto.signing import SigningKey
from distsync.errors import (
    AccessDeniedError,
    IntegrityError,
    NotFoundError,
    StorageError,
    UnknownArtifactError,
    UsageError,
)
from distsync.layout import MAX_SEQ, Layout
from distsync.logorder import (
    LOOK_BACK,
    TAG_BITS,
    claim_reaches_readers,
    is_position,
    listing_floor,
    parse_version_id,
    position,
    seq_of,
)
from distsync.manifest import Manifest, Version, check_manifest, open_manifest, seal_manifest
from distsync.signed import Trust
from distsync.storage.base import Store
from distsync.store_record import StoreRecord, verify_store

__all__ = ["Catalog", "Rejected"]

log = logging.getLogger(__name__)

_MAX_CLAIM_ATTEMPTS = 1000
# Tagged layout: claims of one upload when the log keeps moving past its window (each stays
# in the log as an older version of the same content), and how long the store may take to
# list a new entry before the upload stops waiting for it.
_MAX_TAGGED_CLAIMS = 8
_LISTED_WITHIN = 60.0


@dataclass(frozen=True)
class Rejected:
    """A log entry that failed verification; readers skip it and say so."""

    seq: int  # its position (logorder)
    key: str
    reason: str


class _Claim:
    """What an append has stored so far: whether its failure may remove the content."""

    def __init__(self) -> None:
        self.stored = False  # a log entry of this upload is in the store
        self.unsure = False  # a write failed and whether it landed is unknown

    @property
    def nothing_stored(self) -> bool:
        return not (self.stored or self.unsure)


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

    @property
    def tagged(self) -> bool:
        """Whether writers use the tagged layout: the store record says the store's
        create-if-absent is not atomic. Readers read both layouts either way. Only a record
        this config's trust accepts decides: every server's config holds the secret that
        seals it, so an unsigned one may be a forgery."""
        record = self.record
        return (
            record is not None
            and self.trust.accepts(record.signer)
            and not record.capability("atomic_create")
        )

    @property
    def look_back(self) -> int:
        """Sequence numbers below its cursor a reader lists again (0: none)."""
        return LOOK_BACK if self.tagged else 0

    # -- writing ------------------------------------------------------------------------

    def _hint(self) -> int:
        """The marker's hint of the newest entry if that entry is genuine, else 0."""
        try:
            raw = json.loads(self.store.get(self.layout.marker))
        except (NotFoundError, ValueError, RecursionError):
            return 0
        hint = raw.get("latest") if isinstance(raw, dict) else None
        if not is_position(hint) or hint == 0:
            return 0
        try:
            self.read(hint)
        except (IntegrityError, NotFoundError):
            log.debug("the marker's hint %s is not a genuine log entry; listing the log", hint)
            return 0
        return hint

    def _last_seq_from(self, after: int) -> int:
        """The highest sequence number of any log key after position ``after``: genuine or
        not, it is taken."""
        last = seq_of(after)
        for found in self.log_seqs_after(after):
            last = max(last, seq_of(found))
        return last

    def _next_seq(self, after: int) -> int:
        seq = self._last_seq_from(after) + 1
        if seq > MAX_SEQ:
            # A longer key would be invisible to every reader: never claim one.
            raise StorageError(
                f"{self.store.description}: no log sequence number is free after "
                f"{self.layout.log_key(MAX_SEQ)} (remove that entry if it is not genuine)"
            )
        return seq

    def append(self, manifest: Manifest, *, undo: Callable[[], None] | None = None) -> Version:
        """Claim a place in the log for ``manifest`` and announce it.

        When the claim fails and no entry is in the store, ``undo`` runs before the error is
        raised: the upload removes the content it stored, which nothing refers to. When a
        write failed in a way that leaves unknown whether it landed, the content stays (an
        entry may refer to it).
        """
        claim = _Claim()
        try:
            check_manifest(manifest, self.layout.objects_prefix)
            if self.tagged:
                return self._append_tagged(manifest, claim)
            return self._append_atomic(manifest, claim)
        except BaseException:
            if undo is not None and claim.nothing_stored:
                undo()
            raise

    def _write(self, claim: _Claim, key: str, data: bytes, *, exclusive: bool) -> bool:
        """Store one log entry; False when ``exclusive`` and the key was taken."""
        claim.unsure = True
        try:
            if exclusive:
                created = self.store.create(key, data)
            else:
                self.store.put(key, data)
                created = True
        except AccessDeniedError:
            claim.unsure = False  # refused outright: nothing was stored
            raise
        except StorageError:
            landed = self._landed(key, data)
            if landed is None:
                raise  # the content stays: an entry may refer to it
            claim.unsure = False
            if not landed:
                raise
            log.info("%s: writing %s failed, but it landed", self.store.description, key)
            created = True
        claim.unsure = False
        claim.stored = claim.stored or created
        return created

    def _landed(self, key: str, data: bytes) -> bool | None:
        """After a failed write: whether ``key`` holds exactly ``data`` (the body holds fresh
        random IVs, so then this write landed and only its answer was lost). None when the
        store does not tell."""
        try:
            return self.store.get(key, limit=len(data)) == data
        except NotFoundError:
            return False
        except (StorageError, IntegrityError):
            return None

    def _append_atomic(self, manifest: Manifest, claim: _Claim) -> Version:
        """The next free sequence number, claimed with a create-if-absent."""
        seq = self._next_seq(self._hint())
        for _attempt in range(_MAX_CLAIM_ATTEMPTS):
            key = self.layout.log_key(seq)
            if self._write(claim, key, self._seal_entry(key, manifest), exclusive=True):
                self.announce(seq)
                return Version(seq, key, manifest)
            seq = self._next_seq(seq)  # lost a race: someone else took it
        raise StorageError(f"could not claim a log entry after {_MAX_CLAIM_ATTEMPTS} attempts")

    def _append_tagged(self, manifest: Manifest, claim: _Claim) -> Version:
        """A key of this upload's own after the log's end, listed within every reader's
        look-back window (``logorder.claim_reaches_readers``)."""
        after = self._hint()
        for _attempt in range(_MAX_TAGGED_CLAIMS):
            pos = position(self._next_seq(after), secrets.randbits(TAG_BITS))
            key = self.layout.log_key(pos)
            self._write(claim, key, self._seal_entry(key, manifest), exclusive=False)
            newest = self._newest_seq_once_listed(pos)
            if newest is None or claim_reaches_readers(pos, newest, LOOK_BACK):
                self.announce(pos)
                return Version(pos, key, manifest)
            log.warning(
                "%s: the log moved %d entries past %s while it was written; claiming again",
                self.store.description,
                newest - seq_of(pos),
                key,
            )
            after = position(newest)
        raise StorageError(
            f"{self.store.description}: the log moved more than {LOOK_BACK} entries past "
            f"each of {_MAX_TAGGED_CLAIMS} claims of this upload; try again"
        )

    def _newest_seq_once_listed(self, pos: int) -> int | None:
        """Wait until the store lists the entry at ``pos``; then the highest sequence number
        that listing holds. None (with a warning) if it is not listed in time."""
        key = self.layout.log_key(pos)
        deadline = time.monotonic() + _LISTED_WITHIN
        delay = 0.05
        while True:
            positions = list(self.log_seqs_from(seq_of(pos)))
            if pos in positions:
                return max(seq_of(p) for p in positions)
            if time.monotonic() >= deadline:
                log.warning(
                    "%s has not listed the new log entry %s after %.0f s; servers find it "
                    "once it is listed, if fewer than %d uploads follow it meanwhile",
                    self.store.description,
                    key,
                    _LISTED_WITHIN,
                    LOOK_BACK,
                )
                return None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

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
        """The genuine manifest at position ``seq``: NotFoundError if there is none,
        IntegrityError if what is there fails verification."""
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

    def _positions(self, start_after: str) -> Iterator[int]:
        for key in self.store.list_after(self.layout.log_prefix, start_after):
            found = self.layout.position_of(key)
            if found is not None:
                yield found

    def log_seqs_after(self, seq: int) -> Iterator[int]:
        """The positions of the log keys after position ``seq``, in key order (listing
        only)."""
        return self._positions(self.layout.log_key(seq))

    def log_seqs_from(self, seq: int) -> Iterator[int]:
        """The positions of the log keys with sequence number ``seq`` or above."""
        return self._positions(self.layout.log_listing_start(seq))

    def listing(self, cursor: int) -> Iterator[int]:
        """What a reader whose cursor is at ``cursor`` lists: the keys after it, and on the
        tagged layout also those of its look-back window (``logorder.listing_floor``)."""
        if self.look_back:
            return self.log_seqs_from(listing_floor(cursor, self.look_back))
        return self.log_seqs_after(cursor)

    def entries_after(self, seq: int) -> Iterator[Version | Rejected]:
        """Every log entry after position ``seq``, in key order; bad ones as ``Rejected``."""
        for found in self.log_seqs_after(seq):
            entry = self.read_entry(found)
            if entry is not None:
                yield entry

    def versions(self) -> list[Version]:
        """All genuine versions, newest first."""
        found = []
        for pos in self.log_seqs_from(0):
            entry = self.read_entry(pos)
            if isinstance(entry, Version):
                found.append(entry)
        return sorted(found, key=lambda version: version.seq, reverse=True)

    def newest(self, name: str) -> Version:
        """The newest genuine version of ``name``: the log is listed whole (keys only) and
        read from its end, so a name uploaded recently costs a few reads, not one per entry."""
        for pos in sorted(self.log_seqs_from(0), reverse=True):
            entry = self.read_entry(pos)
            if isinstance(entry, Version) and entry.manifest.name == name:
                return entry
        raise UnknownArtifactError(f"no artifact named {name!r} in {self.store.description}")

    def find(self, name: str, version_id: str) -> Version:
        pos = parse_version_id(version_id)
        if pos is None:
            raise UsageError(
                f"{version_id!r} is not a version id (version ids are what `distsync list` "
                "shows, e.g. 42 or 42.9f3ac2e07b5d)"
            )
        try:
            version = self.read(pos)
        except NotFoundError:
            looks = (
                " (version ids on this store look like 42.9f3ac2e07b5d)"
                if self.tagged and pos <= MAX_SEQ
                else ""
            )
            raise UnknownArtifactError(
                f"no version {version_id} in {self.store.description}{looks}"
            ) from None
        if version.manifest.name != name:
            raise UnknownArtifactError(
                f"version {version_id} is {version.manifest.name!r}, not {name!r}"
            )
        return version
