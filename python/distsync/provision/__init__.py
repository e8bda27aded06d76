"""``distsync setup``: create the store and write the uploader's and the daemon's configs.

The entry points the CLI and the Ansible module call are here; the layers are in the files:

- ``options``: what setup is asked to do and what it reports back;
- ``configs``: the pair of 0600 configs, never silently overwritten, and the prompts;
- ``local``: ``Storage = "Local"``, a directory plays the bucket;
- ``s3``: ``--storage s3``, the flow from the AWS steps to the configs, and ``--destroy``;
- ``s3_plain``: ``--storage s3 --no-iam``, a store that speaks S3 but has no IAM;
- ``swift``: ``--storage swift``, the containers, their ACLs and the configs;
- ``aws_policies``: names, validation and the IAM policies (pure, no boto3);
- ``aws_client``: the boto3 clients and one short error per failed call;
- ``aws_state``: reading what exists into a plan, changing nothing;
- ``aws_apply`` (with ``aws_bucket`` and the undo journal ``aws_journal``): making the changes;
- ``aws_destroy``: removing what one setup id made.
"""

from __future__ import annotations

import os
from pathlib import Path

from distsync import plugins
from distsync.config import load_config
from distsync.errors import DistsyncError, UsageError
from distsync.provision.configs import fill_in_interactively, render_config
from distsync.provision.options import (
    DEFAULT_OUTPUT_DIR,
    DestroyOptions,
    Say,
    SetupOptions,
    SetupResult,
    SwiftSetup,
    silent,
)
from distsync.provision.record import public_key_of
from distsync.provision.s3 import run_destroy
from distsync.storage.api import StorageBackend

__all__ = [
    "DestroyOptions",
    "RemoveReport",
    "SetupOptions",
    "SetupReport",
    "SetupResult",
    "SwiftSetup",
    "ensure_absent",
    "ensure_setup",
    "fill_in_interactively",
    "public_key_of",
    "render_config",
    "run_destroy",
    "run_setup",
    "setup_in_place",
]


def run_setup(options: SetupOptions, *, say: Say = silent, warn: Say = silent) -> SetupResult:
    """Set up a store and write both configs. ``say`` gets progress lines, ``warn`` what a
    failure left behind."""
    backend = _backend(options)
    upload_path = Path(os.path.expanduser(options.upload_config))
    daemon_path = Path(os.path.expanduser(options.daemon_config))
    if upload_path.resolve() == daemon_path.resolve():
        raise UsageError("--upload-config and --daemon-config must be different files")
    output_dir = str(Path(os.path.expanduser(options.output_dir or DEFAULT_OUTPUT_DIR)).absolute())
    return backend.setup(options, upload_path, daemon_path, output_dir, say, warn)


def _backend(options: SetupOptions) -> StorageBackend:
    """The storage plugin ``--storage`` names (``s3`` for ``s3+bittorrent``); the transfer
    after ``+`` must be installed too."""
    storage = options.storage or "local"
    name, plus, transfer = storage.partition("+")
    wanted = [("storage", name)] + ([("transfer", transfer)] if plus else [])
    try:
        found = [plugins.find(kind, value) for kind, value in wanted]
        backend: StorageBackend = found[0].load()
        for plugin in found[1:]:
            plugin.load()
    except plugins.PluginUnavailable as exc:
        choices = ", ".join(name.lower() for name in plugins.names("storage"))
        transfers = ", ".join(name.lower() for name in plugins.names("transfer"))
        raise UsageError(
            f"--storage {storage!r}: {exc} (installed: {choices}; a transfer is added as "
            f"STORAGE+TRANSFER: {transfers})"
        ) from None
    return backend


def setup_in_place(options: SetupOptions) -> bool:
    """Whether ``run_setup(options)`` would change nothing (the Ansible module's question).

    Local: both configs exist, load, share one secret, and name the requested store and
    output directory. S3: additionally the setup's bucket and users exist with the policies
    this version would give them (read-only calls).
    """
    try:
        backend = _backend(options)
    except UsageError:
        return False
    upload_path = Path(os.path.expanduser(options.upload_config))
    daemon_path = Path(os.path.expanduser(options.daemon_config))
    try:
        uploader, daemon = load_config(upload_path), load_config(daemon_path)
    except DistsyncError:
        return False
    output_dir = Path(os.path.expanduser(options.output_dir or DEFAULT_OUTPUT_DIR)).absolute()
    if uploader.secret != daemon.secret or daemon.output_dir != output_dir:
        return False
    return backend.in_place(options, uploader, daemon)


# The idempotent faces of the two functions above (Ansible, Salt); imported last because
# they call back into this module.
from distsync.provision.ensure import (  # noqa: E402
    RemoveReport,
    SetupReport,
    ensure_absent,
    ensure_setup,
)
