"""``distsync setup``: create the store and write the uploader's and the daemon's configs.

This file covers what every storage needs (a fresh SharedSecret, two 0600 config files that are
never silently overwritten) and ``Storage = "Local"`` (a directory plays the bucket). For S3 it
writes configs that use boto3's standard credential chain; creating the bucket and the two
least-privilege identities is the S3 provisioner's job.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from distsync.crypto.secret import generate_secret
from distsync.errors import LocalIOError, UsageError
from distsync.fsutil import atomic_output, local_io_error

__all__ = ["SetupOptions", "SetupResult", "fill_in_interactively", "render_config", "run_setup"]

DEFAULT_LOCAL_BUCKET = "~/.local/share/distsync/bucket"
DEFAULT_OUTPUT_DIR = "~/distsync"
REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-south-1",
    "sa-east-1",
)


@dataclass
class SetupOptions:
    storage: str | None = None  # "local" or "s3"
    bucket: str | None = None
    region: str | None = None
    endpoint: str | None = None
    output_dir: str | None = None
    upload_config: str = "~/.distsync"
    daemon_config: str = "~/.distsyncd"
    force: bool = False


@dataclass
class SetupResult:
    storage: str
    bucket: str
    upload_config: Path
    daemon_config: Path
    notes: list[str] = field(default_factory=list)


def fill_in_interactively(options: SetupOptions, ask: Callable[[str], str] = input) -> None:
    """Prompt for every answer not given as a flag (the seed's "answer the prompts")."""

    def prompt(question: str, default: str) -> str:
        answer = ask(f"{question} [{default}]: ").strip()
        return answer or default

    print("distsync setup: answer the prompts (Enter keeps the default in brackets).")
    if options.storage is None:
        options.storage = prompt("Storage (local or s3)", "local").lower()
    if options.storage == "local":
        if options.bucket is None:
            options.bucket = prompt("Directory that plays the bucket", DEFAULT_LOCAL_BUCKET)
    else:
        if options.region is None:
            print("Regions: " + ", ".join(REGIONS))
            options.region = prompt("AWS region", "us-east-1")
        if options.endpoint is None:
            options.endpoint = prompt("S3 endpoint URL (empty for AWS)", "") or None
        if options.bucket is None:
            options.bucket = prompt("Bucket name", "")
    if options.output_dir is None:
        options.output_dir = prompt(
            "Directory the servers install artifacts into", DEFAULT_OUTPUT_DIR
        )


def render_config(values: dict[str, Any]) -> str:
    header = (
        "# distsync configuration (written by `distsync setup`).\n"
        "# Holds the fleet's SharedSecret: keep it mode 0600 and out of logs and repositories.\n"
    )
    return header + tomli_w.dumps(values)


def run_setup(options: SetupOptions) -> SetupResult:
    storage = (options.storage or "local").lower()
    if storage not in ("local", "s3"):
        raise UsageError(f"--storage must be local or s3, not {storage!r}")
    upload_path = Path(os.path.expanduser(options.upload_config))
    daemon_path = Path(os.path.expanduser(options.daemon_config))
    if upload_path.resolve() == daemon_path.resolve():
        raise UsageError("--upload-config and --daemon-config must be different files")
    if not options.force:
        for path in (upload_path, daemon_path):
            if path.exists():
                raise UsageError(f"{path} already exists (pass --force to replace it)")

    notes: list[str] = []
    common: dict[str, Any] = {"SharedSecret": generate_secret()}
    if storage == "local":
        bucket = str(Path(os.path.expanduser(options.bucket or DEFAULT_LOCAL_BUCKET)).absolute())
        try:
            Path(bucket).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise local_io_error("create", bucket, exc) from None
        common.update(StorageBucket=bucket, Storage="Local")
    else:
        if not options.bucket:
            raise UsageError("--bucket is required with --storage s3")
        bucket = options.bucket
        common.update(StorageBucket=bucket, Storage="S3")
        creds: dict[str, str] = {"Region": options.region or "us-east-1"}
        if options.endpoint:
            creds["Endpoint"] = options.endpoint
        common["AwsCreds"] = creds
        notes.append(
            "the configs use boto3's standard credential chain (environment, instance profile)"
        )
    output_dir = str(Path(os.path.expanduser(options.output_dir or DEFAULT_OUTPUT_DIR)).absolute())
    uploader = {key: value for key, value in common.items() if key != "AwsCreds"}
    daemon = dict(uploader, OutputDir=output_dir)
    if "AwsCreds" in common:
        uploader["AwsCreds"] = dict(common["AwsCreds"])
        daemon["AwsCreds"] = dict(common["AwsCreds"])
    written: list[Path] = []
    try:
        for path, values in ((upload_path, uploader), (daemon_path, daemon)):
            _write_private(path, render_config(values), options.force)
            written.append(path)
    except BaseException:
        for path in written:  # never leave one config of a pair with a secret the other lacks
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return SetupResult(storage, bucket, upload_path, daemon_path, notes)


def _write_private(path: Path, text: str, force: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_io_error("create", path.parent, exc) from None
    if not force and path.exists():
        raise LocalIOError(f"{path} appeared while setup ran; not overwriting it")
    with atomic_output(path, mode=0o600) as out:
        out.write(text.encode())
