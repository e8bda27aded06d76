"""Creating the setup's bucket, or converging the settings of the one that exists.

An existing bucket only gets the settings that differ; what an operator added there (other
lifecycle rules, other tags, a KMS default encryption) stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distsync.errors import StorageError
from distsync.provision.aws_client import AwsClients, call, error_code, lookup, translate
from distsync.provision.aws_journal import Journal, aws_cli
from distsync.provision.aws_policies import (
    ABORT_MULTIPART_DAYS,
    LIFECYCLE_RULE_ID,
    NONCURRENT_VERSION_DAYS,
    PRUNED_CONTENT_DAYS,
    PRUNED_RULE_ID,
    RECORD_EXPIRY_DAYS,
    RECORD_RULE_IDS,
    TAG_SETUP_ID,
    lifecycle_rules,
)
from distsync.provision.aws_state import SetupPlan, read_bucket_tags
from distsync.provision.options import Say

__all__ = ["ensure_bucket"]


def ensure_bucket(clients: AwsClients, plan: SetupPlan, journal: Journal, say: Say) -> bool:
    """Create the bucket (undone by ``journal`` on failure) or converge its settings; whether
    anything changed."""
    s3 = clients.s3
    bucket = plan.bucket
    created = not plan.bucket_exists
    if created:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if plan.region != "us-east-1":  # us-east-1 is the one region that takes no constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": plan.region}
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3.create_bucket(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "BucketAlreadyExists":
                raise StorageError(
                    f"bucket name {bucket} is taken (S3 bucket names are global): "
                    "choose another --setup-id or --bucket"
                ) from None
            raise translate(f"create bucket {bucket}", exc, clients.endpoint) from None
        except BotoCoreError as exc:
            raise translate(f"create bucket {bucket}", exc, clients.endpoint) from None
        journal.add(
            f"bucket {bucket}",
            lambda: s3.delete_bucket(Bucket=bucket),
            aws_cli(clients, f"s3api delete-bucket --bucket {bucket}"),
        )
    done: list[str] = []
    changed = created

    def converge(what: str, current: Callable[[], bool], put: Callable[[], object]) -> None:
        nonlocal changed
        # A new bucket gets every setting written, whatever the account's defaults are.
        if created or not current():
            call(clients, f"set {what} on bucket {bucket}", put)
            changed = True
            done.append(what)

    converge(
        "tags",
        lambda: read_bucket_tags(clients, bucket).get(TAG_SETUP_ID) == plan.setup_id,
        lambda: s3.put_bucket_tagging(
            Bucket=bucket,
            Tagging={"TagSet": _merge_tags(read_bucket_tags(clients, bucket), plan)},
        ),
    )
    block = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    converge(
        "public access block",
        lambda: (
            (_get(clients, s3.get_public_access_block, bucket) or {}).get(
                "PublicAccessBlockConfiguration"
            )
            == block
        ),
        lambda: s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block),
    )
    converge(
        "object ownership (ACLs disabled)",
        lambda: _ownership(clients, bucket) == "BucketOwnerEnforced",
        lambda: s3.put_bucket_ownership_controls(
            Bucket=bucket,
            OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        ),
    )
    converge(
        "default encryption",
        # Any default encryption is kept: an operator may have chosen KMS on purpose.
        lambda: _encryption(clients, bucket) is not None,
        lambda: s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        ),
    )
    converge(
        "versioning",
        lambda: (_get(clients, s3.get_bucket_versioning, bucket) or {}).get("Status") == "Enabled",
        lambda: s3.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        ),
    )
    rules = _lifecycle_rules(clients, bucket)
    record_days = plan.record_expiry_days or _record_days(rules) or RECORD_EXPIRY_DAYS
    wanted = lifecycle_rules(plan.prefix, record_days)
    ours = {LIFECYCLE_RULE_ID, PRUNED_RULE_ID, *RECORD_RULE_IDS.values()}
    converge(
        "lifecycle rules",
        lambda: all(any(_same_rule(rule, want) for rule in rules) for want in wanted),
        lambda: s3.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={
                # Other rules an operator added stay as they are.
                "Rules": [r for r in rules if r.get("ID") not in ours] + wanted
            },
        ),
    )
    settings = (
        "private, public access blocked, ACLs disabled, AES256 by default, versioning on, "
        f"incomplete uploads aborted after {ABORT_MULTIPART_DAYS} days, old versions kept "
        f"{NONCURRENT_VERSION_DAYS} days (pruned contents {PRUNED_CONTENT_DAYS}), records of "
        f"servers gone {record_days} days expired"
    )
    if created:
        say(f"created bucket {bucket} in {plan.region} ({settings})")
    elif done:
        say(f"bucket {bucket} exists; updated: {', '.join(done)}")
    else:
        say(f"bucket {bucket} exists in {plan.region}, settings as expected (unchanged)")
    return changed


def _get(clients: AwsClients, fn: Callable[..., Any], bucket: str) -> Any:
    return lookup(clients, f"read the settings of bucket {bucket}", fn, Bucket=bucket)


def _ownership(clients: AwsClients, bucket: str) -> str | None:
    found = _get(clients, clients.s3.get_bucket_ownership_controls, bucket) or {}
    rules = found.get("OwnershipControls", {}).get("Rules", [])
    return str(rules[0].get("ObjectOwnership")) if rules else None


def _encryption(clients: AwsClients, bucket: str) -> str | None:
    found = _get(clients, clients.s3.get_bucket_encryption, bucket) or {}
    for rule in found.get("ServerSideEncryptionConfiguration", {}).get("Rules", []):
        algorithm = rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
        if algorithm:
            return str(algorithm)
    return None


def _lifecycle_rules(clients: AwsClients, bucket: str) -> list[dict[str, Any]]:
    found = _get(clients, clients.s3.get_bucket_lifecycle_configuration, bucket) or {}
    return list(found.get("Rules", []))


def _record_days(rules: list[dict[str, Any]]) -> int | None:
    """The record expiry an earlier run chose, so a re-run without the option keeps it."""
    for rule in rules:
        if rule.get("ID") in RECORD_RULE_IDS.values():
            days = rule.get("Expiration", {}).get("Days")
            if isinstance(days, int) and days > 0:
                return days
    return None


def _same_rule(rule: dict[str, Any], want: dict[str, Any]) -> bool:
    def days(r: dict[str, Any], key: str, inner: str) -> object:
        return r.get(key, {}).get(inner)

    return (
        rule.get("ID") == want["ID"]
        and rule.get("Status") == "Enabled"
        and (rule.get("Filter") or {}).get("Prefix", "") == want["Filter"]["Prefix"]
        and all(
            days(rule, key, inner) == days(want, key, inner)
            for key, inner in (
                ("AbortIncompleteMultipartUpload", "DaysAfterInitiation"),
                ("NoncurrentVersionExpiration", "NoncurrentDays"),
                ("Expiration", "Days"),
            )
        )
    )


def _merge_tags(current: dict[str, str], plan: SetupPlan) -> list[dict[str, str]]:
    merged = dict(current)
    merged.update({tag["Key"]: tag["Value"] for tag in plan.tags()})
    return [{"Key": key, "Value": value} for key, value in merged.items()]
