"""The swarm's settings: the ``Torrent*`` configuration keys, and two fixed lifetimes."""

from __future__ import annotations

from dataclasses import dataclass

from distsync.config import Config

__all__ = ["TorrentSettings"]


@dataclass(frozen=True)
class TorrentSettings:
    """The ``Torrent*`` keys (README: configuration reference; docs/bittorrent.md)."""

    port: int = 6881
    address: str | None = None  # advertised in our peer record; None: the route to the store
    seed_seconds: float = 600.0
    s3_readers: int = 8
    web_seed_delay: float = 30.0
    stall_seconds: float = 60.0
    tracker_url: str | None = None
    url_lifetime: int = 3600  # seconds a presigned web seed URL is valid
    peer_ttl: float = 900.0  # seconds a peer record is trusted; rewritten every third of it

    @classmethod
    def from_config(cls, cfg: Config) -> TorrentSettings:
        return cls(
            port=cfg.torrent_port,
            address=cfg.torrent_address,
            seed_seconds=cfg.torrent_seed_seconds,
            s3_readers=cfg.torrent_s3_readers,
            web_seed_delay=cfg.torrent_web_seed_delay,
            stall_seconds=cfg.torrent_stall_seconds,
            tracker_url=cfg.tracker_url,
        )
