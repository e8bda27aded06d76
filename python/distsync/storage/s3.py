"""``Storage = "S3"``: placeholder until the S3 backend lands; fails with a clear message."""

from __future__ import annotations

from distsync.config import Config
from distsync.errors import ConfigError

__all__ = ["S3Store"]


class S3Store:
    @classmethod
    def from_config(cls, cfg: Config) -> S3Store:
        raise ConfigError(cfg.path, "Storage", f"{cfg.storage!r} is not supported by this build yet")
