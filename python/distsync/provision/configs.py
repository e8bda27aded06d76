"""The two config files setup writes, and the prompts that fill in what flags left out.

Both configs hold the fleet's SharedSecret: they are written 0600, atomically, as a pair (never
one without the other), and never silently overwritten.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from distsync.errors import LocalIOError, UsageError
from distsync.fsutil import atomic_output, local_io_error
from distsync.provision.aws_policies import (
    new_setup_id,
    validate_endpoint,
    validate_region,
    validate_setup_id,
)
from distsync.provision.options import DEFAULT_LOCAL_BUCKET, DEFAULT_OUTPUT_DIR, SetupOptions

__all__ = [
    "REGIONS",
    "STORAGES",
    "fill_in_interactively",
    "refuse_overwrite",
    "render_config",
    "write_pair",
]

STORAGES = ("local", "s3", "s3+bittorrent", "swift", "swift+bittorrent")
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


def fill_in_interactively(
    options: SetupOptions,
    ask: Callable[[str], str] = input,
    tell: Callable[[str], None] = print,
    ask_secret: Callable[[str], str] = getpass.getpass,
) -> None:
    """Prompt for every answer not given as a flag (the seed's "answer the prompts").

    Each answer is checked as soon as it is given: a wrong one is explained in the terms of
    the question (not of a flag the user never typed) and the question is asked again.
    """

    def prompt(question: str, default: str, check: Callable[[str], str]) -> str:
        while True:
            try:
                answer = ask(f"{question} [{default}]: ").strip() or default
            except EOFError:
                raise UsageError(f"setup cancelled: no answer to {question!r}") from None
            try:
                return check(answer)
            except UsageError as exc:
                tell(f"{exc}; please answer again.")

    tell("distsync setup: answer the prompts (Enter keeps the default in brackets).")
    if options.storage is None:
        options.storage = prompt("Storage (local, s3 or swift)", "local", _storage_answer)
    if options.storage == "local":
        # Before more questions: a local setup always writes both configs.
        refuse_overwrite(
            options,
            Path(os.path.expanduser(options.upload_config)),
            Path(os.path.expanduser(options.daemon_config)),
        )
        if options.bucket is None:
            options.bucket = prompt(
                "Directory that plays the bucket", DEFAULT_LOCAL_BUCKET, _directory_answer
            )
    elif options.storage.startswith("swift"):
        _fill_in_swift(options, prompt, ask_secret)
    elif options.storage not in STORAGES:
        # A storage plugin (docs/plugins.md): where its store is is all setup asks.
        if options.bucket is None:
            options.bucket = prompt("StorageBucket (where the store is)", "", _nonempty)
    else:
        if options.region is None:
            tell("Regions: " + ", ".join(REGIONS))
            options.region = prompt("AWS region", "us-east-1", validate_region)
        if options.endpoint is None:
            options.endpoint = (
                prompt("S3 endpoint URL (empty for AWS)", "", _endpoint_answer) or None
            )
        if options.setup_id is None and not options.no_iam:
            tell(
                "The setup id names the bucket (distsync-ID) and the two IAM users "
                "(distsync-ID-uploader, distsync-ID-daemon); keep it to re-run or remove them."
            )
            options.setup_id = prompt("Setup id", new_setup_id(), validate_setup_id)
    if options.output_dir is None:
        options.output_dir = prompt(
            "Directory the servers install artifacts into", DEFAULT_OUTPUT_DIR, _directory_answer
        )


def _nonempty(answer: str) -> str:
    if not answer.strip():
        raise UsageError("an answer is needed")
    return answer.strip()


def _storage_answer(answer: str) -> str:
    storage = answer.lower()
    if storage not in STORAGES:
        raise UsageError(
            f"{answer!r} is not a storage: answer local, s3, s3+bittorrent, swift or "
            "swift+bittorrent"
        )
    return storage


def _endpoint_answer(answer: str) -> str:
    return validate_endpoint(answer) if answer else ""


def _directory_answer(answer: str) -> str:
    """A directory that exists, or one that can be made: not something else already there."""
    path = Path(os.path.expanduser(answer))
    if path.exists() and not path.is_dir():
        raise UsageError(f"{answer} exists and is not a directory")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"{answer} cannot be made: {parent} is not a directory")
    return answer


def _any_answer(answer: str) -> str:
    return answer


def _required_answer(answer: str) -> str:
    if not answer:
        raise UsageError("an answer is needed here")
    return answer


def _login_url_answer(answer: str) -> str:
    return validate_endpoint(_required_answer(answer))


def _fill_in_swift(
    options: SetupOptions,
    prompt: Callable[[str, str, Callable[[str], str]], str],
    ask_secret: Callable[[str], str],
) -> None:
    swift = options.swift
    if not swift.auth_url:
        swift.auth_url = prompt(
            "Swift login URL (tempauth/Rackspace v1, or Keystone v3)", "", _login_url_answer
        )
    if not swift.username:
        swift.username = prompt(
            "Identity setup and the uploader use (e.g. account:user)", "", _required_answer
        )
    if swift.username and not swift.key:
        swift.key = ask_secret(f"Key or password of {swift.username}: ") or None
    if options.bucket is None:
        options.bucket = prompt("Container", f"distsync-{new_setup_id()}", _any_answer)
    if swift.daemon_username is None:
        swift.daemon_username = (
            prompt("Read-only identity for the daemons (empty: the uploader's)", "", _any_answer)
            or None
        )
    if swift.daemon_username and not swift.daemon_key:
        swift.daemon_key = ask_secret(f"Key or password of {swift.daemon_username}: ") or None


def render_config(values: dict[str, Any]) -> str:
    header = (
        "# distsync configuration (written by `distsync setup`).\n"
        "# Holds the fleet's SharedSecret: keep it mode 0600 and out of logs and repositories.\n"
    )
    return header + tomli_w.dumps(values)


def refuse_overwrite(options: SetupOptions, *paths: Path) -> None:
    if not options.force:
        for path in paths:
            if path.exists():
                raise UsageError(f"{path} already exists (pass --force to replace it)")


def write_pair(options: SetupOptions, *pairs: tuple[Path, dict[str, Any]]) -> None:
    written: list[Path] = []
    try:
        for path, values in pairs:
            _write_private(path, render_config(values), options.force)
            written.append(path)
    except BaseException:
        for path in written:  # never leave one config of a pair with a secret the other lacks
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def _write_private(path: Path, text: str, force: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_io_error("create", path.parent, exc) from None
    if not force and path.exists():
        raise LocalIOError(f"{path} appeared while setup ran; not overwriting it")
    with atomic_output(path, mode=0o600) as out:
        out.write(text.encode())
