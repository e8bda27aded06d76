"""The public transfer plugin interface, version 1 (docs/plugins.md).

``Storage = "S3+BitTorrent"`` is the storage ``S3`` plus the transfer ``BitTorrent``: a
``distsync.transfer`` entry point. Without one, servers fetch by ranged GETs from the store
(``distsync.transfer.fetch``), which is also what every transfer falls back to.

A transfer sees only ciphertext: what it delivers goes through the same verification,
decryption and atomic placement as a ranged fetch. Version 1 has the shape of the swarm: an
uploader-side tap that hashes the ciphertext as it goes out (its result travels in the
encrypted manifest), and a daemon-side session whose ``fetch`` replaces ``fetch_version``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from distsync.storage.base import ObjectWriter, Presigner, Store

if TYPE_CHECKING:
    from distsync.config import Config
    from distsync.manifest import Version
    from distsync.transfer.fetch import FetchResult

__all__ = ["TRANSFER_API", "TransferMethod", "TransferSession", "TransferTap", "transfer_method"]

TRANSFER_API = 1


class TransferTap(ObjectWriter, Protocol):
    """The upload's writer, wrapped: passes everything on, and describes it afterwards."""

    def manifest_field(self) -> dict[str, Any]:
        """What the manifest carries for the servers (``torrent``), after ``commit``."""


class TransferSession(Protocol):
    """One per daemon, for its lifetime."""

    def fetch(
        self,
        store: Store,
        secret: bytes,
        version: Version,
        dest: Path,
        *,
        workers: int = 4,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        mode_mask: int = 0o777,
    ) -> FetchResult:
        """``fetch_version``'s drop-in: deliver, verify, decrypt and place ``version``."""

    def maintain(self) -> None:
        """Called every daemon cycle: housekeeping (peer records, seeding windows)."""

    def close(self) -> None:
        """End the session; called once."""


class TransferMethod(Protocol):
    api: int  # TRANSFER_API
    needs: frozenset[str]  # storage capabilities (distsync.storage.api.Capabilities) it needs

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        """Validate ``[Plugin.<name>]``; raise ``cfg.error(key, problem)``."""

    def tap(
        self, cfg: Config, writer: ObjectWriter, object_key: str, ciphertext_size: int
    ) -> TransferTap:
        """Wrap an upload's writer."""

    def open(
        self,
        cfg: Config,
        store: Store,
        presigner: Presigner | None,
        on_news: Callable[[], None],
    ) -> TransferSession | None:
        """The daemon's session, or None (logged) when it cannot run: ranged GETs then."""


def transfer_method(cfg: Config) -> TransferMethod | None:
    """The transfer plugin after ``+`` in ``Storage``, or None (ranged GETs)."""
    from distsync import plugins
    from distsync.errors import ConfigError

    if cfg.transfer_name is None:
        return None
    try:
        method: TransferMethod = plugins.find("transfer", cfg.transfer_name).load()
    except plugins.PluginUnavailable as exc:
        raise ConfigError(cfg.path, "Storage", str(exc)) from None
    return method
