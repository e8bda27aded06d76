"""``--storage s3``: the setup flow that ties the AWS steps to the two configs.

The bucket and the two least-privilege IAM users come from the ``aws_*`` files: ``plan_setup``
reads, ``apply_setup`` changes. This file decides what the configs say and writes them as the
last step of that provisioning, so that a failure to write them rolls the new users back too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distsync.config import Config, load_config
from distsync.crypto.secret import generate_secret
from distsync.errors import DistsyncError, UsageError
from distsync.layout import Layout
from distsync.provision.aws_apply import AccessKey, apply_setup
from distsync.provision.aws_client import AwsClients, connect
from distsync.provision.aws_destroy import DestroyOutcome, destroy
from distsync.provision.aws_policies import (
    new_setup_id,
    normalize_prefix,
    validate_bucket,
    validate_region,
    validate_setup_id,
)
from distsync.provision.aws_state import SetupPlan, SetupSpec, plan_setup
from distsync.provision.configs import refuse_overwrite
from distsync.provision.options import DestroyOptions, Say, SetupOptions, SetupResult, silent
from distsync.provision.record import (
    probe_capabilities,
    refuse_existing_store,
    write_configs_and_record,
)
from distsync.storage.s3 import S3Store

__all__ = ["run_destroy", "run_s3_setup", "s3_in_place"]


def run_s3_setup(
    options: SetupOptions,
    upload_path: Path,
    daemon_path: Path,
    output_dir: str,
    say: Say,
    warn: Say,
) -> SetupResult:
    setup_id = validate_setup_id(options.setup_id or new_setup_id())
    region = validate_region(options.region or "us-east-1")
    if options.bucket:
        validate_bucket(options.bucket)
    prefix = normalize_prefix(options.prefix) if options.prefix else None
    days = options.record_expiry_days
    if days is not None and not 1 <= days <= 3650:
        raise UsageError(f"--record-expiry-days {days}: give a number of days from 1 to 3650")
    clients = connect(region, options.endpoint, options.profile)
    # BitTorrent: the daemon identity may also write its peer record, under peers/ only.
    bittorrent = _bittorrent(options)
    spec = SetupSpec(
        setup_id,
        region,
        bucket=options.bucket,
        prefix=prefix,
        require_conditional_log=options.require_conditional_log,
        daemon_peer_records=bittorrent,
        record_expiry_days=options.record_expiry_days,
    )
    plan = plan_setup(clients, spec)
    say(
        f"setup {setup_id} as {plan.caller_arn or 'unknown identity'} "
        f"(credentials from {clients.credential_source})"
    )
    store = S3Store(clients.s3, plan.bucket, endpoint=options.endpoint)
    layout = Layout(plan.prefix)
    if plan.fresh:
        # Before any change: a refusal here must not leave a bucket or users behind.
        refuse_overwrite(options, upload_path, daemon_path)
        if plan.bucket_exists:
            refuse_existing_store(options, store, layout)
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
            "Storage": "S3+BitTorrent" if bittorrent else "S3",
            # Written out although it is the default: the policies are bound to it.
            "Prefix": plan.prefix.rstrip("/"),
        }
        uploader = dict(common, AwsCreds=_aws_table(plan, options.endpoint, keys["uploader"]))
        daemon = dict(
            common,
            OutputDir=output_dir,
            AwsCreds=_aws_table(plan, options.endpoint, keys["daemon"]),
        )
        capabilities = probe_capabilities(store, layout, say)
        if plan.require_conditional_log and not capabilities["atomic_create"]:
            # The uploader's policy would refuse every write of the log that such a store
            # needs (a plain PUT of a key of its own).
            raise UsageError(
                f"{store.description}: the store's conditional create is not atomic, so "
                "uploads write log entries of their own with plain PUTs, which "
                "--require-conditional-log forbids: run setup without it"
            )
        write_configs_and_record(
            options,
            store,
            layout,
            capabilities,
            (upload_path, uploader),
            (daemon_path, daemon),
        )

    outcome = apply_setup(clients, plan, say=say, warn=warn, finish=write_configs)
    if not plan.require_conditional_log:
        notes.append(
            "the uploader's policy does not require If-None-Match on log/ writes (this "
            "endpoint may not evaluate s3:if-none-match; see docs/setup-s3.md)"
        )
    if outcome.keys is None:
        notes.extend(_existing_config_notes(plan, upload_path, daemon_path, options.force))
    return SetupResult(
        "s3+bittorrent" if bittorrent else "s3",
        plan.bucket,
        upload_path,
        daemon_path,
        notes,
        setup_id=setup_id,
        changed=outcome.changed,
        configs_written=outcome.keys is not None,
    )


def _bittorrent(options: SetupOptions) -> bool:
    return (options.storage or "").lower() == "s3+bittorrent"


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


def s3_in_place(options: SetupOptions, uploader: Config, daemon: Config) -> bool:
    """The setup's bucket and users exist with the policies this version would give them, and
    both loaded configs name that bucket (read-only calls)."""
    if not options.setup_id:
        return False
    region = validate_region(options.region or "us-east-1")
    clients = connect(region, options.endpoint, options.profile)
    plan = plan_setup(
        clients,
        SetupSpec(
            validate_setup_id(options.setup_id),
            region,
            bucket=options.bucket,
            prefix=normalize_prefix(options.prefix) if options.prefix else None,
            require_conditional_log=options.require_conditional_log,
            daemon_peer_records=_bittorrent(options),
        ),
    )
    policies = plan.policies()
    return (
        plan.bucket_exists
        and uploader.storage_bucket == daemon.storage_bucket == plan.bucket
        and all(user.exists and user.policy == policies[role] for role, user in plan.users.items())
    )


def run_destroy(options: DestroyOptions, *, say: Say = silent) -> DestroyOutcome:
    """``distsync setup --destroy ID``: remove the users, their keys and policies; with
    ``delete_bucket`` also the bucket and every version of its contents."""
    setup_id = validate_setup_id(options.setup_id)
    region = validate_region(options.region or "us-east-1")
    clients = connect(region, options.endpoint, options.profile)
    return destroy(
        clients,
        setup_id,
        bucket=options.bucket,
        delete_bucket=options.delete_bucket,
        say=say,
    )
