"""Object stores behind one small interface (``Store``): one file per backend, each a
``distsync.storage`` plugin (distsync.plugins, distsync.storage.api)."""

from __future__ import annotations

from distsync import plugins
from distsync.config import Config
from distsync.errors import ConfigError
from distsync.storage.api import StorageBackend
from distsync.storage.base import SMALL_OBJECT_LIMIT, ObjectWriter, Store

__all__ = ["SMALL_OBJECT_LIMIT", "ObjectWriter", "Store", "open_store", "storage_backend"]


def storage_backend(cfg: Config) -> StorageBackend:
    """The storage plugin a configuration names (``S3`` for ``S3+BitTorrent``)."""
    try:
        backend: StorageBackend = plugins.find("storage", cfg.storage_name).load()
    except plugins.PluginUnavailable as exc:
        raise ConfigError(cfg.path, "Storage", str(exc)) from None
    return backend


def open_store(cfg: Config) -> Store:
    """The store a configuration names."""
    return storage_backend(cfg).open(cfg)
