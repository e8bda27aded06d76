"""The global log of manifests: append (claim the next sequence number) and read it back.

Reading costs work in proportion to what is new: the store lists only keys after the last
sequence number a reader has seen. The marker's content is a hint of the newest number for
uploaders (it is not trusted: a wrong hint only costs a longer listing or leaves a gap).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from distsync.config import Config
from distsync.errors import IntegrityError, NotFoundError, StorageError
from distsync.layout import Layout
from distsync.manifest import Manifest, Version, open_manifest, seal_manifest
from distsync.storage.base import Store

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
    def __init__(self, store: Store, layout: Layout, secret: bytes) -> None:
        self.store = store
        self.layout = layout
        self._secret = secret

    @classmethod
    def open(cls, cfg: Config) -> Catalog:
        """The log of the store a configuration names (what the CLI and the modules use)."""
        from distsync.storage import open_store

        return cls(open_store(cfg), Layout(cfg.prefix), cfg.secret)

    # -- writing ------------------------------------------------------------------------

    def _hint(self) -> int:
        try:
            hint = json.loads(self.store.get(self.layout.marker)).get("latest", 0)
        except (NotFoundError, ValueError, AttributeError):
            return 0
        return hint if isinstance(hint, int) and hint >= 0 else 0

    def _last_seq_from(self, seq: int) -> int:
        last = seq
        for key in self.store.list_after(self.layout.log_prefix, self.layout.log_key(seq)):
            found = self.layout.seq_of(key)
            if found is not None:
                last = max(last, found)
        return last

    def append(self, manifest: Manifest) -> Version:
        """Claim the next free sequence number for ``manifest`` and announce it."""
        seq = self._last_seq_from(self._hint()) + 1
        for _attempt in range(_MAX_CLAIM_ATTEMPTS):
            key = self.layout.log_key(seq)
            if self.store.create(key, seal_manifest(self._secret, key, manifest)):
                self.announce(seq)
                return Version(seq, key, manifest)
            seq = self._last_seq_from(seq) + 1  # lost a race: someone else took it
        raise StorageError(f"could not claim a log entry after {_MAX_CLAIM_ATTEMPTS} attempts")

    def announce(self, seq: int) -> None:
        """Rewrite the marker so that pollers see a new version tag."""
        body = {"latest": seq, "nonce": os.urandom(8).hex()}
        self.store.put(self.layout.marker, json.dumps(body).encode())

    # -- reading ------------------------------------------------------------------------

    def read(self, seq: int) -> Version:
        key = self.layout.log_key(seq)
        return Version(seq, key, open_manifest(self._secret, key, self.store.get(key)))

    def entries_after(self, seq: int) -> Iterator[Version | Rejected]:
        """Every log entry after ``seq``, oldest first; bad ones as ``Rejected``."""
        for key in self.store.list_after(self.layout.log_prefix, self.layout.log_key(seq)):
            found = self.layout.seq_of(key)
            if found is None:
                continue
            try:
                yield Version(found, key, open_manifest(self._secret, key, self.store.get(key)))
            except IntegrityError as exc:
                yield Rejected(found, key, str(exc))
            except NotFoundError:
                continue

    def versions(self) -> list[Version]:
        """All genuine versions, newest first."""
        found = [entry for entry in self.entries_after(0) if isinstance(entry, Version)]
        return sorted(found, key=lambda version: version.seq, reverse=True)

    def newest(self, name: str) -> Version:
        for version in self.versions():
            if version.manifest.name == name:
                return version
        raise NotFoundError(f"no artifact named {name!r} in {self.store.description}")

    def find(self, name: str, version_id: str) -> Version:
        if not version_id.isdigit():
            raise NotFoundError(f"no version {version_id!r} (version ids are numbers)")
        try:
            version = self.read(int(version_id))
        except NotFoundError:
            raise NotFoundError(f"no version {version_id} in {self.store.description}") from None
        if version.manifest.name != name:
            raise NotFoundError(f"version {version_id} is {version.manifest.name!r}, not {name!r}")
        return version
