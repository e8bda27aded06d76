"""Reading what exists for a setup id into a ``SetupPlan``; nothing here changes anything.

``plan_setup`` refuses inconsistent states (users or a bucket without this setup's tag, one
user of two) before ``aws_apply`` touches anything, and takes what an earlier run chose (bucket,
prefix, log condition, recorded in the tags) unless the operator asks for something else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from distsync.errors import StorageError, UsageError
from distsync.provision.aws_client import (
    AwsClients,
    call,
    error_code,
    is_not_found,
    lookup,
    translate,
)
from distsync.provision.aws_policies import (
    DEFAULT_PREFIX,
    POLICY_NAME,
    ROLES,
    TAG_BUCKET,
    TAG_LOG_CONDITION,
    TAG_PREFIX,
    TAG_ROLE,
    TAG_SETUP_ID,
    build_policies,
    default_bucket,
    normalize_prefix,
    user_name,
    validate_bucket,
)

__all__ = [
    "SetupPlan",
    "SetupSpec",
    "UserState",
    "has_bucket",
    "plan_setup",
    "read_bucket_region",
    "read_bucket_tags",
    "read_user",
]


@dataclass
class UserState:
    role: str
    name: str
    exists: bool = False
    arn: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    access_keys: list[str] = field(default_factory=list)
    other_policies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SetupSpec:
    """What the operator asked for; None means "as it already is, or the default"."""

    setup_id: str
    region: str
    bucket: str | None = None
    prefix: str | None = None
    require_conditional_log: bool | None = None
    daemon_peer_records: bool = False
    record_expiry_days: int | None = None  # None: as the bucket's rule says, or the default


@dataclass
class SetupPlan:
    setup_id: str
    bucket: str
    region: str
    prefix: str
    require_conditional_log: bool
    daemon_peer_records: bool
    partition: str
    caller_arn: str
    bucket_exists: bool
    bucket_region: str | None
    users: dict[str, UserState]
    record_expiry_days: int | None = None

    @property
    def fresh(self) -> bool:
        """No user exists yet: this run creates the identities and writes the configs."""
        return not any(user.exists for user in self.users.values())

    def policies(self) -> dict[str, dict[str, Any]]:
        return build_policies(
            self.bucket,
            self.prefix,
            require_conditional_log=self.require_conditional_log,
            daemon_peer_records=self.daemon_peer_records,
            partition=self.partition,
        )

    def tags(self, role: str | None = None) -> list[dict[str, str]]:
        """The tags that record this setup: on the bucket, and with ``role`` on a user."""
        tags = {TAG_SETUP_ID: self.setup_id, TAG_BUCKET: self.bucket, TAG_PREFIX: self.prefix}
        if role is not None:
            tags[TAG_ROLE] = role
            tags[TAG_LOG_CONDITION] = "required" if self.require_conditional_log else "off"
        return [{"Key": key, "Value": value} for key, value in tags.items()]


def read_user(clients: AwsClients, role: str, name: str) -> UserState:
    iam = clients.iam
    state = UserState(role, name)
    user = lookup(clients, f"look up IAM user {name}", iam.get_user, UserName=name)
    if user is None:
        return state
    state.exists = True
    state.arn = user["User"].get("Arn", "")
    tags = call(clients, f"read the tags of IAM user {name}", iam.list_user_tags, UserName=name)
    state.tags = {tag["Key"]: tag["Value"] for tag in tags.get("Tags", [])}
    names = call(clients, f"list the policies of {name}", iam.list_user_policies, UserName=name)
    if POLICY_NAME in names.get("PolicyNames", []):
        document = call(
            clients,
            f"read the policy of {name}",
            iam.get_user_policy,
            UserName=name,
            PolicyName=POLICY_NAME,
        )["PolicyDocument"]
        # botocore decodes IAM policy documents; a compatible server may return the raw text.
        state.policy = json.loads(document) if isinstance(document, str) else document
    state.other_policies = [p for p in names.get("PolicyNames", []) if p != POLICY_NAME]
    keys = call(clients, f"list the access keys of {name}", iam.list_access_keys, UserName=name)
    state.access_keys = [k["AccessKeyId"] for k in keys.get("AccessKeyMetadata", [])]
    return state


def read_bucket_tags(clients: AwsClients, bucket: str) -> dict[str, str]:
    found = lookup(
        clients,
        f"read the tags of bucket {bucket}",
        clients.s3.get_bucket_tagging,
        Bucket=bucket,
    )
    return {tag["Key"]: tag["Value"] for tag in (found or {}).get("TagSet", [])}


def has_bucket(clients: AwsClients, bucket: str) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        clients.s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if is_not_found(exc):
            return False
        if error_code(exc) in ("403", "AccessDenied"):
            raise StorageError(
                f"bucket {bucket} exists but this identity cannot use it (another account's "
                "bucket names are taken for everyone: choose another --setup-id or --bucket)"
            ) from None
        raise translate(f"look up bucket {bucket}", exc, clients.endpoint) from None
    except BotoCoreError as exc:
        raise translate(f"look up bucket {bucket}", exc, clients.endpoint) from None
    return True


def read_bucket_region(clients: AwsClients, bucket: str) -> str:
    found = call(
        clients,
        f"read the region of bucket {bucket}",
        clients.s3.get_bucket_location,
        Bucket=bucket,
    )
    location = found.get("LocationConstraint") or "us-east-1"
    return "eu-west-1" if location == "EU" else str(location)


def plan_setup(clients: AwsClients, spec: SetupSpec) -> SetupPlan:
    """Read what exists for ``spec.setup_id`` and decide what to do; changes nothing."""
    identity = call(clients, "identify the AWS credentials", clients.sts.get_caller_identity)
    caller_arn = str(identity.get("Arn", ""))
    partition = caller_arn.split(":")[1] if caller_arn.count(":") >= 5 else "aws"
    users = {role: read_user(clients, role, user_name(spec.setup_id, role)) for role in ROLES}
    existing = [user for user in users.values() if user.exists]
    for user in existing:
        if user.tags.get(TAG_SETUP_ID) != spec.setup_id:
            raise UsageError(
                f"IAM user {user.name} exists but was not made by `distsync setup` for "
                f"{spec.setup_id} (no {TAG_SETUP_ID} tag): choose another --setup-id"
            )
    if existing and len(existing) != len(users):
        missing = [user.name for user in users.values() if not user.exists]
        raise UsageError(
            f"setup {spec.setup_id} is incomplete ({', '.join(missing)} missing): remove it "
            f"with `distsync setup --destroy {spec.setup_id}` and run setup again"
        )
    # A re-run takes what the first run chose unless told otherwise; the tags remember it.
    recorded = existing[0].tags if existing else {}
    bucket = validate_bucket(
        spec.bucket or recorded.get(TAG_BUCKET) or default_bucket(spec.setup_id)
    )
    if recorded.get(TAG_BUCKET) and bucket != recorded[TAG_BUCKET]:
        raise UsageError(f"setup {spec.setup_id} uses bucket {recorded[TAG_BUCKET]}, not {bucket}")
    prefix = normalize_prefix(spec.prefix or recorded.get(TAG_PREFIX) or DEFAULT_PREFIX)
    if spec.require_conditional_log is not None:
        conditional = spec.require_conditional_log
    elif TAG_LOG_CONDITION in recorded:
        conditional = recorded[TAG_LOG_CONDITION] == "required"
    else:
        # On by default on AWS, which evaluates s3:if-none-match; off for other endpoints,
        # which may not (ministack and moto do not: every log write would be refused).
        conditional = clients.endpoint is None
    bucket_exists = has_bucket(clients, bucket)
    bucket_region = None
    if bucket_exists:
        tags = read_bucket_tags(clients, bucket)
        if tags.get(TAG_SETUP_ID) != spec.setup_id:
            raise UsageError(
                f"bucket {bucket} already exists and was not made by `distsync setup` for "
                f"{spec.setup_id} (no {TAG_SETUP_ID} tag): choose another --setup-id or --bucket"
            )
        bucket_region = read_bucket_region(clients, bucket)
    return SetupPlan(
        setup_id=spec.setup_id,
        bucket=bucket,
        region=bucket_region or spec.region,
        prefix=prefix,
        require_conditional_log=conditional,
        daemon_peer_records=spec.daemon_peer_records,
        partition=partition,
        caller_arn=caller_arn,
        bucket_exists=bucket_exists,
        bucket_region=bucket_region,
        users=users,
        record_expiry_days=spec.record_expiry_days,
    )
