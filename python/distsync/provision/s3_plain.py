"""``--storage s3 --no-iam``: a store that speaks S3 but has no IAM to make identities with
(Swift's S3 API, MinIO or Ceph RGW without their identity layers, most hosted S3-compatible
services).

Setup creates the bucket if it is missing, asks the store what its conditional create is
worth (``probe_capabilities``), writes the store record, and gives both configs the keys setup
itself runs with, saying so: the store's own tools are the only way to give the daemons a
read-only key there (docs/setup-s3.md, "Stores without IAM").
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from distsync.crypto.secret import generate_secret
from distsync.errors import UsageError
from distsync.layout import Layout
from distsync.provision.aws_client import AwsClients, call, connect, is_not_found, translate
from distsync.provision.aws_policies import (
    DEFAULT_PREFIX,
    new_setup_id,
    normalize_prefix,
    validate_bucket,
    validate_region,
)
from distsync.provision.configs import refuse_overwrite
from distsync.provision.options import Say, SetupOptions, SetupResult
from distsync.provision.record import (
    probe_capabilities,
    refuse_existing_store,
    write_configs_and_record,
)
from distsync.storage.s3 import S3Store

__all__ = ["run_s3_setup_without_iam"]


def _setup_keys(clients: AwsClients) -> dict[str, str]:
    """The long-term keys setup runs with, as ``[AwsCreds]`` holds them."""
    credentials = clients.credentials
    frozen = credentials.get_frozen_credentials() if credentials is not None else None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise UsageError("--no-iam writes the keys setup runs with into both configs: none found")
    if frozen.token:
        raise UsageError(
            "--no-iam writes the keys setup runs with into both configs, and these are "
            "temporary (they carry a session token): run setup with long-term keys"
        )
    return {"AccessKey": frozen.access_key, "SecretKey": frozen.secret_key}


def _ensure_bucket(clients: AwsClients, bucket: str, region: str, say: Say) -> bool:
    """Create ``bucket`` unless it exists; whether it was created."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        clients.s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if not is_not_found(exc):
            raise translate(f"check bucket {bucket}", exc, clients.endpoint) from None
    except BotoCoreError as exc:
        raise translate(f"check bucket {bucket}", exc, clients.endpoint) from None
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    call(clients, f"create bucket {bucket}", clients.s3.create_bucket, **kwargs)
    say(f"created bucket {bucket}")
    return True


def run_s3_setup_without_iam(
    options: SetupOptions,
    upload_path: Path,
    daemon_path: Path,
    output_dir: str,
    say: Say,
    warn: Say,
) -> SetupResult:
    if options.setup_id:
        raise UsageError("--setup-id names IAM users: it does not go with --no-iam")
    region = validate_region(options.region or "us-east-1")
    bucket = validate_bucket(options.bucket or f"distsync-{new_setup_id()}")
    prefix = normalize_prefix(options.prefix) if options.prefix else DEFAULT_PREFIX
    # Before any change: a refusal here must not leave a bucket behind.
    refuse_overwrite(options, upload_path, daemon_path)
    clients = connect(region, options.endpoint, options.profile)
    keys = _setup_keys(clients)
    store = S3Store(clients.s3, bucket, endpoint=options.endpoint)
    layout = Layout(prefix)
    created = _ensure_bucket(clients, bucket, region, say)
    try:
        if not created:
            refuse_existing_store(options, store, layout)
        bittorrent = (options.storage or "").lower() == "s3+bittorrent"
        aws: dict[str, str] = {"Region": region, **keys}
        if options.endpoint:
            aws["Endpoint"] = options.endpoint
        common: dict[str, Any] = {
            "SharedSecret": generate_secret(),
            "StorageBucket": bucket,
            "Storage": "S3+BitTorrent" if bittorrent else "S3",
            "Prefix": prefix.rstrip("/"),
        }
        write_configs_and_record(
            options,
            store,
            layout,
            probe_capabilities(store, layout, say),
            (upload_path, dict(common, AwsCreds=aws)),
            (daemon_path, dict(common, OutputDir=output_dir, AwsCreds=aws)),
        )
    except BaseException:
        if created:
            with contextlib.suppress(Exception):
                clients.s3.delete_bucket(Bucket=bucket)
                warn(f"removed bucket {bucket} again")
        raise
    return SetupResult(
        "s3+bittorrent" if bittorrent else "s3",
        bucket,
        upload_path,
        daemon_path,
        [
            "--no-iam: both configs carry the keys setup ran with; give the daemons a "
            "read-only key of their own with the store's tools (docs/setup-s3.md, "
            '"Stores without IAM")'
        ],
    )
