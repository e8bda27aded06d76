"""Object stores behind one small interface (``Store``): one file per backend."""

from __future__ import annotations

from distsync.config import Config
from distsync.storage.base import SMALL_OBJECT_LIMIT, ObjectWriter, Store

__all__ = ["SMALL_OBJECT_LIMIT", "ObjectWriter", "Store", "open_store"]


def open_store(cfg: Config) -> Store:
    """The store a configuration names."""
    if cfg.storage == "Local":
        from distsync.storage.local import LocalStore

        return LocalStore(cfg.local_store_root())
    if cfg.swift_storage:
        from distsync.storage.swift import SwiftStore

        return SwiftStore.from_config(cfg)
    from distsync.storage.s3 import S3Store

    return S3Store.from_config(cfg)
