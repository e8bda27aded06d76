"""``distsync setup`` for a storage plugin's store: everything but creating the store itself.

A plugin's ``StorageBackend.setup`` makes its store reachable (a directory, a container) and
calls ``set_up_store``, which does what setup does for every backend: refuse to overwrite
configs or replace an existing store without ``--force``, find out whether create-if-absent is
atomic (the plugin's promise, else a probe of the store), write both configs with a fresh
SharedSecret and then the sealed store record (``provision.record``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distsync.crypto.secret import generate_secret
from distsync.errors import StorageError
from distsync.layout import Layout
from distsync.provision.configs import refuse_overwrite
from distsync.provision.options import SetupOptions, SetupResult
from distsync.provision.record import refuse_existing_store, write_configs_and_record
from distsync.storage.api import Capabilities
from distsync.storage.base import Store
from distsync.storage.probe import ProbeInconclusive, Verdict, probe_conditional_create

__all__ = ["set_up_store"]


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
    """Write the configs (``Storage = storage``, ``StorageBucket = bucket`` and the plugin's
    ``[Plugin.<storage>]`` ``settings``) and the store record of ``store``."""
    refuse_overwrite(options, upload_path, daemon_path)
    layout = Layout()
    refuse_existing_store(options, store, layout)
    atomic = capabilities.atomic_create
    if atomic is None:
        try:
            atomic = probe_conditional_create(store, layout.prefix) is Verdict.ATOMIC
        except ProbeInconclusive as exc:
            raise StorageError(f"{store.description}: {exc}") from None
    uploader: dict[str, Any] = {
        "SharedSecret": generate_secret(),
        "StorageBucket": bucket,
        "Storage": storage,
    }
    if settings:
        uploader["Plugin"] = {storage: dict(settings)}
    daemon = dict(uploader, OutputDir=output_dir)
    write_configs_and_record(
        options,
        store,
        layout,
        {"atomic_create": atomic},
        (upload_path, uploader),
        (daemon_path, daemon),
    )
    return SetupResult(storage.lower(), bucket, upload_path, daemon_path)
