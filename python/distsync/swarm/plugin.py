"""The ``BitTorrent`` transfer plugin (``Storage = "S3+BitTorrent"``): the swarm behind the
``distsync.transfer`` interface (distsync.transfer.api)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from distsync.plugin_config import no_settings
from distsync.storage.base import ObjectWriter, Presigner, Store
from distsync.swarm.meta import TorrentWriter, piece_length_for
from distsync.transfer.api import TRANSFER_API, TransferSession, TransferTap

if TYPE_CHECKING:
    from distsync.config import Config

__all__ = ["BITTORRENT"]


class _Tap(TorrentWriter):
    def manifest_field(self) -> dict[str, Any]:
        return self.meta().to_manifest()


class _BitTorrent:
    api = TRANSFER_API
    # Ranged reads: each S3 reader fetches its share of pieces, and the fallback is ranged
    # GETs. Presigned URLs: the BEP 19 web seed a stalled swarm adds.
    needs = frozenset({"ranged_reads", "presigned_urls"})

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        no_settings(cfg, "BitTorrent", table)  # its settings are the Torrent* keys

    def tap(
        self, cfg: Config, writer: ObjectWriter, object_key: str, ciphertext_size: int
    ) -> TransferTap:
        # The swarm's torrent, hashed as the ciphertext goes out: no second pass.
        return _Tap(writer, object_key.rsplit("/", 1)[-1], piece_length_for(ciphertext_size))

    def open(
        self,
        cfg: Config,
        store: Store,
        presigner: Presigner | None,
        on_news: Callable[[], None],
    ) -> TransferSession | None:
        from distsync.swarm.session import open_swarm
        from distsync.swarm.settings import TorrentSettings

        return open_swarm(
            TorrentSettings.from_config(cfg),
            store,
            cfg.secret,
            cfg.prefix,
            cfg.daemon_state_dir() / "torrent",
            endpoint=cfg.aws.endpoint,
            presigner=presigner,
            on_news=on_news,
        )


BITTORRENT = _BitTorrent()
