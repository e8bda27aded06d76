"""``distsync setup``: create the store and write the uploader's and the daemon's configs.

This file covers what every storage needs (a fresh SharedSecret, two 0600 config files that are
never silently overwritten) and ``Storage = "Local"`` (a directory plays the bucket). For
``--storage s3`` the bucket and the two least-privilege IAM users come from
``provision_aws``; this file decides what the configs say and writes them as the last step of
that provisioning, so that a failure to write them rolls the new users back too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from distsync.crypto.secret import generate_secret
from distsync.errors import DistsyncError, LocalIOError, UsageError
from distsync.fsutil import atomic_output, local_io_error

if TYPE_CHECKING:
    from distsync.provision_aws import AccessKey, AwsClients, DestroyOutcome, SetupPlan

__all__ = [
    "DestroyOptions",
    "SetupOptions",
    "SetupResult",
    "fill_in_interactively",
    "render_config",
    "run_destroy",
    "run_setup",
]

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

Say = Callable[[str], None]


def _silent(line: str) -> None:
    pass


@dataclass
class SetupOptions:
    storage: str | None = None  # "local" or "s3"
    bucket: str | None = None  # S3: default distsync-<setup id>
    region: str | None = None
    endpoint: str | None = None
    output_dir: str | None = None
    upload_config: str = "~/.distsync"
    daemon_config: str = "~/.distsyncd"
    force: bool = False
    # S3 only.
    setup_id: str | None = None  # default: a new random id
    prefix: str | None = None  # default distsync/v3/ (or what an earlier run chose)
    profile: str | None = None  # AWS profile for setup itself; default boto3's chain
    require_conditional_log: bool | None = None  # None: on for AWS, off for --endpoint


@dataclass
class DestroyOptions:
    setup_id: str
    region: str | None = None
    endpoint: str | None = None
    profile: str | None = None
    bucket: str | None = None
    delete_bucket: bool = False


@dataclass
class SetupResult:
    storage: str
    bucket: str
    upload_config: Path
    daemon_config: Path
    notes: list[str] = field(default_factory=list)
    setup_id: str | None = None
    changed: bool = True
    configs_written: bool = True


def fill_in_interactively(options: SetupOptions, ask: Callable[[str], str] = input) -> None:
    """Prompt for every answer not given as a flag (the seed's "answer the prompts")."""
    from distsync.provision_aws import new_setup_id

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
        if options.setup_id is None:
            print(
                "The setup id names the bucket (distsync-ID) and the two IAM users "
                "(distsync-ID-uploader, distsync-ID-daemon); keep it to re-run or remove them."
            )
            options.setup_id = prompt("Setup id", new_setup_id())
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


def run_setup(options: SetupOptions, *, say: Say = _silent, warn: Say = _silent) -> SetupResult:
    """Set up a store and write both configs. ``say`` gets progress lines, ``warn`` what a
    failure left behind."""
    storage = (options.storage or "local").lower()
    if storage not in ("local", "s3"):
        raise UsageError(f"--storage must be local or s3, not {storage!r}")
    upload_path = Path(os.path.expanduser(options.upload_config))
    daemon_path = Path(os.path.expanduser(options.daemon_config))
    if upload_path.resolve() == daemon_path.resolve():
        raise UsageError("--upload-config and --daemon-config must be different files")
    output_dir = str(Path(os.path.expanduser(options.output_dir or DEFAULT_OUTPUT_DIR)).absolute())
    if storage == "s3":
        return _run_s3_setup(options, upload_path, daemon_path, output_dir, say, warn)

    _refuse_overwrite(options, upload_path, daemon_path)
    bucket = str(Path(os.path.expanduser(options.bucket or DEFAULT_LOCAL_BUCKET)).absolute())
    try:
        Path(bucket).mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise local_io_error("create", bucket, exc) from None
    uploader: dict[str, Any] = {
        "SharedSecret": generate_secret(),
        "StorageBucket": bucket,
        "Storage": "Local",
    }
    daemon = dict(uploader, OutputDir=output_dir)
    _write_pair(options, (upload_path, uploader), (daemon_path, daemon))
    return SetupResult(storage, bucket, upload_path, daemon_path)


def _refuse_overwrite(options: SetupOptions, *paths: Path) -> None:
    if not options.force:
        for path in paths:
            if path.exists():
                raise UsageError(f"{path} already exists (pass --force to replace it)")


def _write_pair(options: SetupOptions, *pairs: tuple[Path, dict[str, Any]]) -> None:
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


def _run_s3_setup(
    options: SetupOptions,
    upload_path: Path,
    daemon_path: Path,
    output_dir: str,
    say: Say,
    warn: Say,
) -> SetupResult:
    from distsync import provision_aws as aws

    setup_id = aws.validate_setup_id(options.setup_id or aws.new_setup_id())
    region = aws.validate_region(options.region or "us-east-1")
    if options.bucket:
        aws.validate_bucket(options.bucket)
    prefix = aws.normalize_prefix(options.prefix) if options.prefix else None
    clients = aws.connect(region, options.endpoint, options.profile)
    spec = aws.SetupSpec(
        setup_id,
        region,
        bucket=options.bucket,
        prefix=prefix,
        require_conditional_log=options.require_conditional_log,
    )
    plan = aws.plan_setup(clients, spec)
    say(
        f"setup {setup_id} as {plan.caller_arn or 'unknown identity'} "
        f"(credentials from {clients.credential_source})"
    )
    if plan.fresh:
        # Before any change: a refusal here must not leave a bucket or users behind.
        _refuse_overwrite(options, upload_path, daemon_path)
    notes: list[str] = []
    if region != plan.region:
        notes.append(f"bucket {plan.bucket} is in {plan.region}, not {region}: using {plan.region}")
    if plan.fresh and plan.bucket_exists and _holds_objects(clients, plan):
        notes.append(
            f"bucket {plan.bucket} already holds objects under {plan.prefix} from an earlier "
            "setup; the new SharedSecret cannot read them (daemons skip them with a warning)"
        )

    def write_configs(keys: dict[str, AccessKey] | None) -> None:
        if keys is None:
            return
        common: dict[str, Any] = {
            "SharedSecret": generate_secret(),
            "StorageBucket": plan.bucket,
            "Storage": "S3",
            # Written out although it is the default: the policies are bound to it.
            "Prefix": plan.prefix.rstrip("/"),
        }
        uploader = dict(common, AwsCreds=_aws_table(plan, options.endpoint, keys["uploader"]))
        daemon = dict(
            common,
            OutputDir=output_dir,
            AwsCreds=_aws_table(plan, options.endpoint, keys["daemon"]),
        )
        _write_pair(options, (upload_path, uploader), (daemon_path, daemon))

    outcome = aws.apply_setup(clients, plan, say=say, warn=warn, finish=write_configs)
    if not plan.require_conditional_log:
        notes.append(
            "the uploader's policy does not require If-None-Match on log/ writes (this "
            "endpoint may not evaluate s3:if-none-match; see docs/setup-s3.md)"
        )
    if outcome.keys is None:
        notes.extend(_existing_config_notes(plan, upload_path, daemon_path, options.force))
    return SetupResult(
        "s3",
        plan.bucket,
        upload_path,
        daemon_path,
        notes,
        setup_id=setup_id,
        changed=outcome.changed,
        configs_written=outcome.keys is not None,
    )


def _aws_table(plan: SetupPlan, endpoint: str | None, key: AccessKey) -> dict[str, str]:
    table = {
        "Region": plan.region,
        "AccessKey": key.access_key_id,
        "SecretKey": key.secret_access_key,
    }
    if endpoint:
        table["Endpoint"] = endpoint
    return table


def _holds_objects(clients: AwsClients, plan: SetupPlan) -> bool:
    try:
        found = clients.s3.list_objects_v2(Bucket=plan.bucket, Prefix=plan.prefix, MaxKeys=1)
    except Exception:  # only decides whether a note is shown
        return False
    return bool(found.get("KeyCount") or found.get("Contents"))


def _existing_config_notes(
    plan: SetupPlan, upload_path: Path, daemon_path: Path, force: bool
) -> list[str]:
    """On a re-run the configs are left alone: their secret keys and SharedSecret exist
    nowhere else, so they could only be replaced by rotating keys, which a re-run must not do."""
    from distsync.config import load_config

    notes: list[str] = []
    if force:
        notes.append("--force does not rewrite the configs of an existing setup")
    for role, path in (("uploader", upload_path), ("daemon", daemon_path)):
        keys = plan.users[role].access_keys
        if not path.exists():
            notes.append(
                f"{path} does not exist here and cannot be written again (AWS shows a secret "
                "key only once): copy it from where setup first ran, or remove the setup with "
                f"`distsync setup --destroy {plan.setup_id}` and run setup again"
            )
            continue
        try:
            cfg = load_config(path)
        except DistsyncError as exc:
            notes.append(f"{path} left as it is, but it does not load: {exc}")
            continue
        if cfg.storage_bucket != plan.bucket or cfg.aws.access_key not in keys:
            notes.append(
                f"{path} left as it is, but it is not this setup's {role} config "
                f"(bucket {cfg.storage_bucket}, key {cfg.aws.access_key or 'none'})"
            )
        else:
            notes.append(f"{path} left as it is (this setup's {role}, key {cfg.aws.access_key})")
    return notes


def run_destroy(options: DestroyOptions, *, say: Say = _silent) -> DestroyOutcome:
    """``distsync setup --destroy ID``: remove the users, their keys and policies; with
    ``delete_bucket`` also the bucket and every version of its contents."""
    from distsync import provision_aws as aws

    setup_id = aws.validate_setup_id(options.setup_id)
    region = aws.validate_region(options.region or "us-east-1")
    clients = aws.connect(region, options.endpoint, options.profile)
    return aws.destroy(
        clients,
        setup_id,
        bucket=options.bucket,
        delete_bucket=options.delete_bucket,
        say=say,
    )


def _write_private(path: Path, text: str, force: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_io_error("create", path.parent, exc) from None
    if not force and path.exists():
        raise LocalIOError(f"{path} appeared while setup ran; not overwriting it")
    with atomic_output(path, mode=0o600) as out:
        out.write(text.encode())


def setup_in_place(options: SetupOptions) -> bool:
    """Whether ``run_setup(options)`` would change nothing (the Ansible module's question).

    Local: both configs exist, load, share one secret, and name the requested store and
    output directory. S3: additionally the setup's bucket and users exist with the policies
    this version would give them (read-only calls).
    """
    from distsync.config import load_config
    from distsync.errors import DistsyncError

    storage = (options.storage or "local").lower()
    upload_path = Path(os.path.expanduser(options.upload_config))
    daemon_path = Path(os.path.expanduser(options.daemon_config))
    try:
        uploader, daemon = load_config(upload_path), load_config(daemon_path)
    except DistsyncError:
        return False
    output_dir = Path(os.path.expanduser(options.output_dir or DEFAULT_OUTPUT_DIR)).absolute()
    if uploader.secret != daemon.secret or daemon.output_dir != output_dir:
        return False
    if storage == "local":
        wanted = Path(os.path.expanduser(options.bucket or DEFAULT_LOCAL_BUCKET)).absolute()
        return (
            uploader.storage == daemon.storage == "Local"
            and uploader.local_store_root() == daemon.local_store_root() == wanted
            and wanted.is_dir()
        )
    from distsync import provision_aws as aws

    if not options.setup_id:
        return False
    region = aws.validate_region(options.region or "us-east-1")
    clients = aws.connect(region, options.endpoint, options.profile)
    plan = aws.plan_setup(
        clients,
        aws.SetupSpec(
            aws.validate_setup_id(options.setup_id),
            region,
            bucket=options.bucket,
            prefix=aws.normalize_prefix(options.prefix) if options.prefix else None,
            require_conditional_log=options.require_conditional_log,
        ),
    )
    policies = plan.policies()
    return (
        plan.bucket_exists
        and uploader.storage_bucket == daemon.storage_bucket == plan.bucket
        and all(
            user.exists and user.policy == policies[role] for role, user in plan.users.items()
        )
    )
