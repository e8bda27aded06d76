"""``Storage = "Local"``: a directory plays the bucket."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distsync.config import Config
from distsync.crypto.secret import generate_secret
from distsync.fsutil import local_io_error
from distsync.layout import Layout
from distsync.provision.configs import refuse_overwrite
from distsync.provision.options import DEFAULT_LOCAL_BUCKET, Say, SetupOptions, SetupResult
from distsync.provision.record import (
    probe_capabilities,
    refuse_existing_store,
    write_configs_and_record,
)
from distsync.storage.local import LocalStore

__all__ = ["local_in_place", "run_local_setup"]


def run_local_setup(
    options: SetupOptions, upload_path: Path, daemon_path: Path, output_dir: str, say: Say
) -> SetupResult:
    refuse_overwrite(options, upload_path, daemon_path)
    bucket = str(Path(os.path.expanduser(options.bucket or DEFAULT_LOCAL_BUCKET)).absolute())
    try:
        Path(bucket).mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise local_io_error("create", bucket, exc) from None
    store, layout = LocalStore(Path(bucket)), Layout()
    refuse_existing_store(options, store, layout)
    uploader: dict[str, Any] = {
        "SharedSecret": generate_secret(),
        "StorageBucket": bucket,
        "Storage": "Local",
    }
    daemon = dict(uploader, OutputDir=output_dir)
    # A directory's create is link(), atomic on a local file system; a network file system
    # may not keep that promise, so the probe asks.
    write_configs_and_record(
        options,
        store,
        layout,
        probe_capabilities(store, layout, say),
        (upload_path, uploader),
        (daemon_path, daemon),
    )
    return SetupResult("local", bucket, upload_path, daemon_path)


def local_in_place(options: SetupOptions, uploader: Config, daemon: Config) -> bool:
    """Both loaded configs name the requested directory, and it exists."""
    wanted = Path(os.path.expanduser(options.bucket or DEFAULT_LOCAL_BUCKET)).absolute()
    return (
        uploader.storage == daemon.storage == "Local"
        and uploader.local_store_root() == daemon.local_store_root() == wanted
        and wanted.is_dir()
    )
