"""The public storage plugin interface, version 1 (docs/plugins.md).

A storage plugin is an object registered under the entry-point group ``distsync.storage``
(its name is what ``Storage = "..."`` says) with the attributes of ``StorageBackend``. It
opens a ``Store`` — the object interface every built-in backend implements — and tells the
engine what the store can do (``Capabilities``). The engine asks capabilities, never names.

What the engine guarantees on top of any store, without the plugin doing anything: contents
and names encrypted, every byte authenticated before it is placed, atomic placement on the
servers, rollback protection, the sealed store record. What a plugin must guarantee: a new
object is invisible until ``ObjectWriter.commit`` (no reader sees half of it), ``put``
replaces whole, ``list_after`` is in lexicographic order, ``get`` never reads past its limit,
failures are ``StorageError`` (``NotFoundError`` for a missing key) with one-line messages
holding no secret.

Stable names for plugin authors are re-exported here; anything else in ``distsync`` may
change without notice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from distsync.config import Config
from distsync.errors import (
    AccessDeniedError,
    ConfigError,
    NotAnObjectError,
    NotFoundError,
    StorageError,
    UsageError,
)
from distsync.storage.base import SMALL_OBJECT_LIMIT, ObjectWriter, Presigner, Store, too_large

if TYPE_CHECKING:  # only annotations: the provision package imports the built-in backends
    from distsync.provision.options import Say, SetupOptions, SetupResult

__all__ = [
    "SMALL_OBJECT_LIMIT",
    "STORAGE_API",
    "AccessDeniedError",
    "Capabilities",
    "Config",
    "ConfigError",
    "NotAnObjectError",
    "NotFoundError",
    "ObjectWriter",
    "Presigner",
    "StorageBackend",
    "StorageError",
    "Store",
    "UsageError",
    "set_up_store",
    "too_large",
]

STORAGE_API = 1


@dataclass(frozen=True)
class Capabilities:
    """What a backend's stores can do; the engine decides by these, never by a name.

    ``atomic_create`` is the backend's promise: True (only one of two racing
    ``Store.create`` calls of a key wins), False (not atomic, or no conditional create), or
    None (it depends on the server: ``distsync setup`` probes it and records the answer in the
    store record, which is what the engine then goes by).
    """

    atomic_create: bool | None
    conditional_head: bool  # Store.changed costs one small conditional request
    ranged_reads: bool  # Store.get_range reads only the range (parallel, resumable fetches)
    presigned_urls: bool  # the store is also a Presigner (BitTorrent's web seed)
    delete: bool  # the store can remove an object (retention, setup's probe keys)

    def names(self) -> list[str]:
        """The capabilities held (``atomic_create`` when promised), for messages."""
        return [f.name for f in fields(self) if getattr(self, f.name) is True]

    def has(self, name: str) -> bool:
        return getattr(self, name, None) is True


class StorageBackend(Protocol):
    """What a ``distsync.storage`` entry point names (an instance, a class or a module)."""

    api: int  # STORAGE_API, the interface version the plugin was written for
    capabilities: Capabilities
    # Which daemon state file a store location uses: stores of the same kind at the same
    # bucket and prefix share one (the built-ins keep the names they had before plugins).
    state_key: str

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        """Validate the plugin's own table ``[Plugin.<name>]`` (``{}`` when there is none)
        and whatever else of ``cfg`` it needs; raise ``cfg.error(key, problem)``, a
        one-line ConfigError naming the file and the key (``Plugin.<name>.<Key>``)."""

    def open(self, cfg: Config) -> Store:
        """The store a checked configuration names; no request is needed yet."""

    def setup(
        self,
        options: SetupOptions,
        upload_path: Path,
        daemon_path: Path,
        output_dir: str,
        say: Say,
        warn: Say,
    ) -> SetupResult:
        """``distsync setup --storage <name>``: create the store, then ``set_up_store`` below
        writes both configs and the sealed store record."""

    def in_place(self, options: SetupOptions, uploader: Config, daemon: Config) -> bool:
        """Whether setup would change nothing (the Ansible module's idempotency question)."""


def set_up_store(
    options: SetupOptions,
    upload_path: Path,
    daemon_path: Path,
    output_dir: str,
    *,
    storage: str,
    bucket: str,
    store: Store,
    capabilities: Capabilities,
    settings: Mapping[str, Any] | None = None,
) -> SetupResult:
    """What setup does for every store once it exists (``distsync.provision.plugin``)."""
    from distsync.provision.plugin import set_up_store as set_up

    return set_up(
        options,
        upload_path,
        daemon_path,
        output_dir,
        storage=storage,
        bucket=bucket,
        store=store,
        capabilities=capabilities,
        settings=settings,
    )
