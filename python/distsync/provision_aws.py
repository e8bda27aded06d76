"""``distsync setup --storage s3``: one bucket and two least-privilege IAM users per setup id.

What one setup id owns (names carry the id, tags record it, so ``--destroy ID`` only ever
removes what setup made):

- the bucket ``distsync-ID`` (or ``--bucket``): private, public access blocked, ACLs off,
  default encryption, versioning on, a lifecycle rule that aborts incomplete multipart uploads
  and expires old versions after a grace period;
- the IAM users ``distsync-ID-uploader`` and ``distsync-ID-daemon`` (path ``/distsync/``),
  each with one inline policy from ``build_policies`` and one access key.

The work is split in two so that nothing is changed before everything is known:
``plan_setup`` only reads (and refuses inconsistent states); ``apply_setup`` makes the changes
under a journal that undoes, in reverse, everything this run created if any later step fails,
and says exactly what is left (with the commands that remove it) if an undo fails too.
Re-running converges (bucket settings and policies are compared and only rewritten when they
differ) and never creates, rotates or prints secret keys: AWS shows a secret key once, at
creation, and distsync keeps no copy of it outside the configs it wrote.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from distsync.errors import DistsyncError, StorageError, UsageError

__all__ = [
    "DEFAULT_PREFIX",
    "POLICY_NAME",
    "ROLES",
    "AccessKey",
    "AwsClients",
    "DestroyOutcome",
    "SetupOutcome",
    "SetupPlan",
    "SetupSpec",
    "UserState",
    "apply_setup",
    "build_policies",
    "connect",
    "default_bucket",
    "destroy",
    "new_setup_id",
    "normalize_prefix",
    "plan_setup",
    "setup_admin_policy",
    "user_name",
    "validate_region",
    "validate_setup_id",
]

T = TypeVar("T")
Say = Callable[[str], None]

DEFAULT_PREFIX = "distsync/v3/"
ROLES = ("uploader", "daemon")
POLICY_NAME = "distsync"
USER_PATH = "/distsync/"
LIFECYCLE_RULE_ID = "distsync"
TAG_SETUP_ID = "distsync:setup-id"
TAG_BUCKET = "distsync:bucket"
TAG_PREFIX = "distsync:prefix"
TAG_ROLE = "distsync:role"
TAG_LOG_CONDITION = "distsync:log-condition"
ABORT_MULTIPART_DAYS = 7
NONCURRENT_VERSION_DAYS = 30

# Short enough that "distsync-ID-uploader" fits IAM's 64-character user names and
# "distsync-ID" S3's 63-character bucket names; lower case because bucket names must be.
_SETUP_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}")
# "Not there" (HEAD requests carry only the status; bucket settings that were never set
# answer with codes of their own).
_NOT_FOUND = {
    "404",
    "NotFound",
    "NoSuchEntity",
    "ServerSideEncryptionConfigurationNotFoundError",
    "OwnershipControlsNotFoundError",
}


# -- names and validation (pure) ---------------------------------------------------------


def new_setup_id() -> str:
    """12 hex digits: unique enough for S3's global bucket namespace, short to type."""
    return secrets.token_hex(6)


def validate_setup_id(text: str) -> str:
    if not _SETUP_ID.fullmatch(text) or "--" in text:
        raise UsageError(
            f"setup id {text!r} must be 1-40 lower-case letters, digits and single hyphens, "
            "not starting or ending with a hyphen"
        )
    return text


def default_bucket(setup_id: str) -> str:
    return f"distsync-{setup_id}"


def validate_bucket(name: str) -> str:
    if not _BUCKET.fullmatch(name) or ".." in name or name.startswith("xn--"):
        raise UsageError(f"{name!r} is not a valid S3 bucket name (3-63 characters a-z 0-9 . -)")
    return name


def user_name(setup_id: str, role: str) -> str:
    return f"distsync-{setup_id}-{role}"


def validate_region(region: str) -> str:
    """Any well-formed region name, not just a list: new regions keep appearing."""
    if not _REGION.fullmatch(region):
        raise UsageError(f"{region!r} is not an AWS region name (like us-east-1 or eu-west-3)")
    return region


def normalize_prefix(prefix: str) -> str:
    """``distsync/v3`` or ``distsync/v3/`` -> ``distsync/v3/``, as the configs' Prefix reads."""
    stripped = prefix.strip("/")
    parts = stripped.split("/")
    if not stripped or any(part in ("", ".", "..") for part in parts) or "*" in stripped:
        raise UsageError(f"prefix {prefix!r} must be a key prefix like 'distsync/v3'")
    return stripped + "/"


# -- policies (pure) ---------------------------------------------------------------------


def build_policies(
    bucket: str,
    prefix: str = DEFAULT_PREFIX,
    *,
    require_conditional_log: bool = False,
    daemon_peer_records: bool = False,
    partition: str = "aws",
) -> dict[str, dict[str, Any]]:
    """The inline policy of each identity, keyed by role (``uploader``, ``daemon``).

    Everything is scoped to ``bucket`` and to ``prefix`` (layout.py: ``marker``, ``log/``,
    ``objects/``). ``require_conditional_log`` makes a write to ``log/*`` need an
    ``If-None-Match`` header (the ``s3:if-none-match`` condition key), so the uploader can only
    create log entries, never overwrite them: AWS evaluates that key, but a server that does
    not fill it in refuses *every* log write, so it is off for other endpoints.
    ``daemon_peer_records`` is the hook for BitTorrent peer discovery (peers.py): it lets the
    daemon write under ``peers/`` and nowhere else. Records carry an authenticated expiry, so
    nothing needs to delete them.
    """
    prefix = normalize_prefix(prefix)
    bucket_arn = f"arn:{partition}:s3:::{bucket}"

    def keys(path: str) -> str:
        return f"{bucket_arn}/{prefix}{path}"

    append_to_log: dict[str, Any] = {
        "Sid": "AppendToLog",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": keys("log/*"),
    }
    if require_conditional_log:
        # "Not null" = the request carried If-None-Match, and S3 accepts only "*" there on a
        # write: create-if-absent, never replace. Log entries are single PUTs, so the
        # multipart exemption AWS documents for this key is not needed.
        append_to_log["Condition"] = {"Null": {"s3:if-none-match": "false"}}
    uploader = {
        "Version": "2012-10-17",
        "Statement": [
            {
                # New artifacts: single PUT or multipart (CreateMultipartUpload, UploadPart and
                # CompleteMultipartUpload are all s3:PutObject), plus cleaning up its own
                # failed uploads. No GetObject here: the uploader cannot read artifacts back.
                "Sid": "WriteArtifacts",
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": keys("objects/*"),
            },
            append_to_log,
            {
                "Sid": "Announce",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": keys("marker"),
            },
            {
                # The marker's hint and the log entries (encrypted manifests) are what versioning
                # and idempotent uploads need to read.
                "Sid": "ReadLogAndMarker",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [keys("log/*"), keys("marker")],
            },
            {
                "Sid": "ListLog",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}log/*"]}},
            },
        ],
    }
    daemon_statements: list[dict[str, Any]] = [
        {
            "Sid": "ListPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        },
        # GetObject also covers HEAD (the marker poll) and ranged GETs (artifact chunks).
        {"Sid": "ReadAll", "Effect": "Allow", "Action": "s3:GetObject", "Resource": keys("*")},
    ]
    if daemon_peer_records:
        daemon_statements.append(
            {
                # Each server's own small record for peer discovery; the uploader cannot write
                # here and the daemon cannot write anywhere else.
                "Sid": "PeerRecords",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": keys("peers/*"),
            }
        )
    daemon = {"Version": "2012-10-17", "Statement": daemon_statements}
    return {"uploader": uploader, "daemon": daemon}


def setup_admin_policy(partition: str = "aws") -> dict[str, Any]:
    """What the identity that runs ``setup`` and ``setup --destroy`` needs, and no more.

    Scoped to buckets named ``distsync-*`` and users named ``distsync-*`` (any path: AWS
    evaluates a not-yet-existing user's ARN without the path).
    """
    buckets = f"arn:{partition}:s3:::distsync-*"
    users = f"arn:{partition}:iam::*:user/*distsync-*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Buckets",
                "Effect": "Allow",
                "Action": [
                    "s3:CreateBucket",
                    "s3:DeleteBucket",
                    "s3:ListBucket",
                    "s3:ListBucketVersions",
                    "s3:ListBucketMultipartUploads",
                    "s3:GetBucketLocation",
                    "s3:GetBucketPublicAccessBlock",
                    "s3:PutBucketPublicAccessBlock",
                    "s3:GetBucketOwnershipControls",
                    "s3:PutBucketOwnershipControls",
                    "s3:GetEncryptionConfiguration",
                    "s3:PutEncryptionConfiguration",
                    "s3:GetBucketVersioning",
                    "s3:PutBucketVersioning",
                    "s3:GetLifecycleConfiguration",
                    "s3:PutLifecycleConfiguration",
                    "s3:GetBucketTagging",
                    "s3:PutBucketTagging",
                ],
                "Resource": buckets,
            },
            {
                # Only `--destroy ID --delete-bucket` uses these: emptying every version.
                "Sid": "EmptyBuckets",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"],
                "Resource": buckets + "/*",
            },
            {
                "Sid": "Users",
                "Effect": "Allow",
                "Action": [
                    "iam:GetUser",
                    "iam:CreateUser",
                    "iam:DeleteUser",
                    "iam:TagUser",
                    "iam:ListUserTags",
                    "iam:GetUserPolicy",
                    "iam:PutUserPolicy",
                    "iam:DeleteUserPolicy",
                    "iam:ListUserPolicies",
                    "iam:ListAttachedUserPolicies",
                    "iam:DetachUserPolicy",
                    "iam:CreateAccessKey",
                    "iam:ListAccessKeys",
                    "iam:DeleteAccessKey",
                ],
                "Resource": users,
            },
        ],
    }


def _lifecycle_rule() -> dict[str, Any]:
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        # A crashed upload leaves parts that cost storage and are invisible to listings.
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
        # Versioning keeps what is overwritten (every upload rewrites the marker): recoverable
        # for a while, not forever.
        "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSION_DAYS},
    }


# -- talking to AWS ------------------------------------------------------------------------


@dataclass
class AwsClients:
    s3: Any
    iam: Any
    sts: Any
    region: str
    endpoint: str | None = None
    credential_source: str = "unknown"


def connect(region: str, endpoint: str | None = None, profile: str | None = None) -> AwsClients:
    """Clients for the identity that runs setup: boto3's standard chain, or ``profile``.

    Secret keys are never taken as flags (they would show in process listings).
    """
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError

    # botocore announces at INFO where it found credentials; the CLI logs INFO to stderr.
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        credentials = session.get_credentials()
    except BotoCoreError as exc:  # e.g. ProfileNotFound, a malformed shared config file
        raise UsageError(f"AWS credentials for setup: {exc}") from None
    if credentials is None:
        raise UsageError(
            "no AWS credentials for setup: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or pass --profile (an administrator of the account)"
        )
    options: dict[str, Any] = {
        # Few attempts: setup is interactive, and a wrong --endpoint should fail fast.
        "retries": {"max_attempts": 3, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    if endpoint:
        # Compatible servers on a plain host:port cannot do virtual-hosted bucket names.
        options["s3"] = {"addressing_style": "path"}
    config = BotoConfig(**options)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint or None, config=config)

    return AwsClients(
        s3=client("s3"),
        iam=client("iam"),
        sts=client("sts"),
        region=region,
        endpoint=endpoint,
        credential_source=str(getattr(credentials, "method", "unknown")),
    )


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _is_not_found(exc: BaseException) -> bool:
    code = _code(exc)
    return code in _NOT_FOUND or code.startswith("NoSuch")


def _translate(what: str, exc: Exception, endpoint: str | None) -> DistsyncError:
    """One line for a failed AWS call; never the request's credentials."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        code = _code(exc) or "error"
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        detail = f"{code}: {message}" if message and message != code else code
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            detail += " (the identity running setup needs the policy in docs/setup-s3.md)"
        elif code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidAccessKeyId"):
            detail += " (check the AWS credentials setup runs with)"
        return StorageError(f"cannot {what}: {detail}")
    if isinstance(exc, NoCredentialsError):
        return UsageError("no AWS credentials for setup (set AWS_PROFILE, or pass --profile)")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        where = endpoint or "AWS"
        return StorageError(f"cannot {what}: cannot reach {where} ({type(exc).__name__})")
    return StorageError(f"cannot {what}: {type(exc).__name__}: {exc}")


def _call(clients: AwsClients, what: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise _translate(what, exc, clients.endpoint) from None


def _lookup(clients: AwsClients, what: str, fn: Callable[..., T], /, **kwargs: Any) -> T | None:
    """Like ``_call``, but None when AWS says the thing (or the setting) does not exist."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        if _is_not_found(exc):
            return None
        raise _translate(what, exc, clients.endpoint) from None
    except BotoCoreError as exc:
        raise _translate(what, exc, clients.endpoint) from None


# -- reading the current state -------------------------------------------------------------


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


def _read_user(clients: AwsClients, role: str, name: str) -> UserState:
    iam = clients.iam
    state = UserState(role, name)
    user = _lookup(clients, f"look up IAM user {name}", iam.get_user, UserName=name)
    if user is None:
        return state
    state.exists = True
    state.arn = user["User"].get("Arn", "")
    tags = _call(clients, f"read the tags of IAM user {name}", iam.list_user_tags, UserName=name)
    state.tags = {tag["Key"]: tag["Value"] for tag in tags.get("Tags", [])}
    names = _call(clients, f"list the policies of {name}", iam.list_user_policies, UserName=name)
    if POLICY_NAME in names.get("PolicyNames", []):
        document = _call(
            clients,
            f"read the policy of {name}",
            iam.get_user_policy,
            UserName=name,
            PolicyName=POLICY_NAME,
        )["PolicyDocument"]
        # botocore decodes IAM policy documents; a compatible server may return the raw text.
        state.policy = json.loads(document) if isinstance(document, str) else document
    state.other_policies = [p for p in names.get("PolicyNames", []) if p != POLICY_NAME]
    keys = _call(clients, f"list the access keys of {name}", iam.list_access_keys, UserName=name)
    state.access_keys = [k["AccessKeyId"] for k in keys.get("AccessKeyMetadata", [])]
    return state


def _bucket_tags(clients: AwsClients, bucket: str) -> dict[str, str]:
    found = _lookup(
        clients,
        f"read the tags of bucket {bucket}",
        clients.s3.get_bucket_tagging,
        Bucket=bucket,
    )
    return {tag["Key"]: tag["Value"] for tag in (found or {}).get("TagSet", [])}


def _bucket_exists(clients: AwsClients, bucket: str) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        clients.s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _is_not_found(exc):
            return False
        if _code(exc) in ("403", "AccessDenied"):
            raise StorageError(
                f"bucket {bucket} exists but this identity cannot use it (another account's "
                "bucket names are taken for everyone: choose another --setup-id or --bucket)"
            ) from None
        raise _translate(f"look up bucket {bucket}", exc, clients.endpoint) from None
    except BotoCoreError as exc:
        raise _translate(f"look up bucket {bucket}", exc, clients.endpoint) from None
    return True


def _bucket_region(clients: AwsClients, bucket: str) -> str:
    found = _call(
        clients,
        f"read the region of bucket {bucket}",
        clients.s3.get_bucket_location,
        Bucket=bucket,
    )
    location = found.get("LocationConstraint") or "us-east-1"
    return "eu-west-1" if location == "EU" else str(location)


def plan_setup(clients: AwsClients, spec: SetupSpec) -> SetupPlan:
    """Read what exists for ``spec.setup_id`` and decide what to do; changes nothing."""
    identity = _call(clients, "identify the AWS credentials", clients.sts.get_caller_identity)
    caller_arn = str(identity.get("Arn", ""))
    partition = caller_arn.split(":")[1] if caller_arn.count(":") >= 5 else "aws"
    users = {role: _read_user(clients, role, user_name(spec.setup_id, role)) for role in ROLES}
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
    bucket_exists = _bucket_exists(clients, bucket)
    bucket_region = None
    if bucket_exists:
        tags = _bucket_tags(clients, bucket)
        if tags.get(TAG_SETUP_ID) != spec.setup_id:
            raise UsageError(
                f"bucket {bucket} already exists and was not made by `distsync setup` for "
                f"{spec.setup_id} (no {TAG_SETUP_ID} tag): choose another --setup-id or --bucket"
            )
        bucket_region = _bucket_region(clients, bucket)
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
    )


# -- making changes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass
class SetupOutcome:
    plan: SetupPlan
    changed: bool
    # Only a run that created the users has their secret keys; a re-run cannot recover them.
    keys: dict[str, AccessKey] | None


@dataclass
class _Undo:
    what: str
    action: Callable[[], object]
    command: str


class _Journal:
    """Everything this run created, to remove in reverse order if a later step fails."""

    def __init__(self) -> None:
        self.entries: list[_Undo] = []

    def add(self, what: str, action: Callable[[], object], command: str) -> None:
        self.entries.append(_Undo(what, action, command))

    def roll_back(self, warn: Say) -> None:
        removed: list[str] = []
        left: list[_Undo] = []
        for entry in reversed(self.entries):
            try:
                entry.action()
            except Exception as exc:
                if _is_not_found(exc):
                    continue
                left.append(entry)
            else:
                removed.append(entry.what)
        if removed:
            warn("setup failed; removed what this run had created: " + "; ".join(removed))
        if left:
            warn("setup failed and could NOT remove (remove these by hand):")
            for entry in reversed(left):
                warn(f"  {entry.what}: {entry.command}")


def _aws_cli(clients: AwsClients, args: str) -> str:
    endpoint = f" --endpoint-url {clients.endpoint}" if clients.endpoint else ""
    return f"aws{endpoint} {args}"


def apply_setup(
    clients: AwsClients,
    plan: SetupPlan,
    *,
    say: Say,
    warn: Say,
    finish: Callable[[dict[str, AccessKey] | None], None] | None = None,
) -> SetupOutcome:
    """Create or converge everything ``plan`` describes.

    ``finish`` runs last, inside the rollback: when it fails (e.g. the configs cannot be
    written) the new users go too, since their secret keys would otherwise be lost.
    """
    journal = _Journal()
    try:
        changed = _ensure_bucket(clients, plan, journal, say)
        keys: dict[str, AccessKey] | None = None
        if plan.fresh:
            keys = {role: _create_user(clients, plan, role, journal, say) for role in ROLES}
            changed = True
        else:
            for role in ROLES:
                changed |= _converge_user(clients, plan, plan.users[role], say)
        if finish is not None:
            finish(keys)
    except BaseException:
        journal.roll_back(warn)
        raise
    return SetupOutcome(plan, changed, keys)


def _ensure_bucket(clients: AwsClients, plan: SetupPlan, journal: _Journal, say: Say) -> bool:
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
            if _code(exc) == "BucketAlreadyExists":
                raise StorageError(
                    f"bucket name {bucket} is taken (S3 bucket names are global): "
                    "choose another --setup-id or --bucket"
                ) from None
            raise _translate(f"create bucket {bucket}", exc, clients.endpoint) from None
        except BotoCoreError as exc:
            raise _translate(f"create bucket {bucket}", exc, clients.endpoint) from None
        journal.add(
            f"bucket {bucket}",
            lambda: s3.delete_bucket(Bucket=bucket),
            _aws_cli(clients, f"s3api delete-bucket --bucket {bucket}"),
        )
    done: list[str] = []
    changed = created

    def converge(what: str, current: Callable[[], bool], put: Callable[[], object]) -> None:
        nonlocal changed
        # A new bucket gets every setting written, whatever the account's defaults are.
        if created or not current():
            _call(clients, f"set {what} on bucket {bucket}", put)
            changed = True
            done.append(what)

    converge(
        "tags",
        lambda: _bucket_tags(clients, bucket).get(TAG_SETUP_ID) == plan.setup_id,
        lambda: s3.put_bucket_tagging(
            Bucket=bucket,
            Tagging={"TagSet": _merge_tags(_bucket_tags(clients, bucket), plan)},
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
    converge(
        "lifecycle rule",
        lambda: any(_same_rule(rule, _lifecycle_rule()) for rule in rules),
        lambda: s3.put_bucket_lifecycle_configuration(
            Bucket=bucket,
            LifecycleConfiguration={
                # Other rules an operator added stay as they are.
                "Rules": [r for r in rules if r.get("ID") != LIFECYCLE_RULE_ID]
                + [_lifecycle_rule()]
            },
        ),
    )
    settings = (
        "private, public access blocked, ACLs disabled, AES256 by default, versioning on, "
        f"incomplete uploads aborted after {ABORT_MULTIPART_DAYS} days, old versions kept "
        f"{NONCURRENT_VERSION_DAYS} days"
    )
    if created:
        say(f"created bucket {bucket} in {plan.region} ({settings})")
    elif done:
        say(f"bucket {bucket} exists; updated: {', '.join(done)}")
    else:
        say(f"bucket {bucket} exists in {plan.region}, settings as expected (unchanged)")
    return changed


def _get(clients: AwsClients, fn: Callable[..., Any], bucket: str) -> Any:
    return _lookup(clients, f"read the settings of bucket {bucket}", fn, Bucket=bucket)


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


def _same_rule(rule: dict[str, Any], want: dict[str, Any]) -> bool:
    def days(r: dict[str, Any], key: str, inner: str) -> object:
        return r.get(key, {}).get(inner)

    return (
        rule.get("ID") == want["ID"]
        and rule.get("Status") == "Enabled"
        and not (rule.get("Filter") or {}).get("Prefix")
        and days(rule, "AbortIncompleteMultipartUpload", "DaysAfterInitiation")
        == days(want, "AbortIncompleteMultipartUpload", "DaysAfterInitiation")
        and days(rule, "NoncurrentVersionExpiration", "NoncurrentDays")
        == days(want, "NoncurrentVersionExpiration", "NoncurrentDays")
    )


def _setup_tags(plan: SetupPlan, role: str | None = None) -> list[dict[str, str]]:
    tags = {TAG_SETUP_ID: plan.setup_id, TAG_BUCKET: plan.bucket, TAG_PREFIX: plan.prefix}
    if role is not None:
        tags[TAG_ROLE] = role
        tags[TAG_LOG_CONDITION] = "required" if plan.require_conditional_log else "off"
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _merge_tags(current: dict[str, str], plan: SetupPlan) -> list[dict[str, str]]:
    merged = dict(current)
    merged.update({tag["Key"]: tag["Value"] for tag in _setup_tags(plan)})
    return [{"Key": key, "Value": value} for key, value in merged.items()]


def _create_user(
    clients: AwsClients, plan: SetupPlan, role: str, journal: _Journal, say: Say
) -> AccessKey:
    iam = clients.iam
    name = user_name(plan.setup_id, role)
    _call(
        clients,
        f"create IAM user {name}",
        iam.create_user,
        UserName=name,
        Path=USER_PATH,
        Tags=_setup_tags(plan, role),
    )
    journal.add(
        f"IAM user {name}",
        lambda: iam.delete_user(UserName=name),
        _aws_cli(clients, f"iam delete-user --user-name {name}"),
    )
    document = json.dumps(plan.policies()[role], separators=(",", ":"))
    _call(
        clients,
        f"put the policy of IAM user {name}",
        iam.put_user_policy,
        UserName=name,
        PolicyName=POLICY_NAME,
        PolicyDocument=document,
    )
    journal.add(
        f"policy {POLICY_NAME} of IAM user {name}",
        lambda: iam.delete_user_policy(UserName=name, PolicyName=POLICY_NAME),
        _aws_cli(clients, f"iam delete-user-policy --user-name {name} --policy-name {POLICY_NAME}"),
    )
    found = _call(
        clients, f"create an access key for IAM user {name}", iam.create_access_key, UserName=name
    )["AccessKey"]
    key = AccessKey(found["AccessKeyId"], found["SecretAccessKey"])
    journal.add(
        f"access key {key.access_key_id} of IAM user {name}",
        lambda: iam.delete_access_key(UserName=name, AccessKeyId=key.access_key_id),
        _aws_cli(
            clients,
            f"iam delete-access-key --user-name {name} --access-key-id {key.access_key_id}",
        ),
    )
    say(f"created IAM user {name} with policy {POLICY_NAME} and access key {key.access_key_id}")
    return key


def _converge_user(clients: AwsClients, plan: SetupPlan, user: UserState, say: Say) -> bool:
    iam = clients.iam
    want = plan.policies()[user.role]
    changed = False
    notes: list[str] = []
    if user.policy != want:
        _call(
            clients,
            f"update the policy of IAM user {user.name}",
            iam.put_user_policy,
            UserName=user.name,
            PolicyName=POLICY_NAME,
            PolicyDocument=json.dumps(want, separators=(",", ":")),
        )
        notes.append("policy updated" if user.policy is not None else "policy restored")
        changed = True
    wanted_tags = {tag["Key"]: tag["Value"] for tag in _setup_tags(plan, user.role)}
    if any(user.tags.get(key) != value for key, value in wanted_tags.items()):
        _call(
            clients,
            f"tag IAM user {user.name}",
            iam.tag_user,
            UserName=user.name,
            Tags=_setup_tags(plan, user.role),
        )
        notes.append("tags updated")
        changed = True
    if user.other_policies:
        notes.append(f"other inline policies left alone: {', '.join(user.other_policies)}")
    count = len(user.access_keys)
    keys = f"{count} access key{'s' if count != 1 else ''}" + (
        f" ({', '.join(user.access_keys)})" if user.access_keys else ""
    )
    state = "; ".join(notes) if notes else "policy as expected (unchanged)"
    say(f"IAM user {user.name} exists with {keys}; {state}")
    return changed


# -- teardown ------------------------------------------------------------------------------


@dataclass
class DestroyOutcome:
    changed: bool
    removed: list[str] = field(default_factory=list)
    bucket: str | None = None
    bucket_kept: bool = False


def destroy(
    clients: AwsClients,
    setup_id: str,
    *,
    bucket: str | None = None,
    delete_bucket: bool = False,
    say: Say,
) -> DestroyOutcome:
    """Remove the users, their keys and policies; with ``delete_bucket`` the bucket and every
    version of everything in it. Only what carries this setup id's tag is touched; a second
    run finds nothing and says so."""
    outcome = DestroyOutcome(changed=False)
    problems: list[str] = []
    recorded_bucket: str | None = None
    for role in ROLES:
        name = user_name(setup_id, role)
        state = _read_user(clients, role, name)
        if not state.exists:
            say(f"IAM user {name}: not there (nothing to remove)")
            continue
        if state.tags.get(TAG_SETUP_ID) != setup_id:
            problems.append(f"IAM user {name} has no {TAG_SETUP_ID}={setup_id} tag; left alone")
            continue
        recorded_bucket = recorded_bucket or state.tags.get(TAG_BUCKET)
        try:
            _remove_user(clients, state)
        except DistsyncError as exc:
            problems.append(str(exc))
            continue
        outcome.changed = True
        outcome.removed.append(f"IAM user {name}")
        say(f"removed IAM user {name} (its access keys and policy {POLICY_NAME})")
    name = validate_bucket(bucket or recorded_bucket or default_bucket(setup_id))
    outcome.bucket = name
    if not _bucket_exists(clients, name):
        say(f"bucket {name}: not there (nothing to remove)")
    elif _bucket_tags(clients, name).get(TAG_SETUP_ID) != setup_id:
        problems.append(f"bucket {name} has no {TAG_SETUP_ID}={setup_id} tag; left alone")
    elif delete_bucket:
        try:
            count = _empty_and_delete_bucket(clients, name)
        except DistsyncError as exc:
            problems.append(str(exc))
        else:
            outcome.changed = True
            outcome.removed.append(f"bucket {name}")
            say(f"removed bucket {name} and {count} object version(s) and delete marker(s)")
    else:
        outcome.bucket_kept = True
        say(
            f"kept bucket {name} and its contents; remove it too with "
            f"`distsync setup --destroy {setup_id} --delete-bucket`"
        )
    if problems:
        raise StorageError("teardown incomplete: " + "; ".join(problems))
    return outcome


def _remove_user(clients: AwsClients, state: UserState) -> None:
    iam = clients.iam
    name = state.name
    for key_id in state.access_keys:
        _lookup(
            clients,
            f"delete access key {key_id} of {name}",
            iam.delete_access_key,
            UserName=name,
            AccessKeyId=key_id,
        )
    for policy in ([POLICY_NAME] if state.policy is not None else []) + state.other_policies:
        _lookup(
            clients,
            f"delete policy {policy} of {name}",
            iam.delete_user_policy,
            UserName=name,
            PolicyName=policy,
        )
    attached = _call(
        clients,
        f"list managed policies of {name}",
        iam.list_attached_user_policies,
        UserName=name,
    )
    for policy in attached.get("AttachedPolicies", []):
        _call(
            clients,
            f"detach policy {policy['PolicyName']} from {name}",
            iam.detach_user_policy,
            UserName=name,
            PolicyArn=policy["PolicyArn"],
        )
    _lookup(clients, f"delete IAM user {name}", iam.delete_user, UserName=name)


def _empty_and_delete_bucket(clients: AwsClients, bucket: str) -> int:
    """Delete every object version and delete marker, page by page (a page holds at most
    1,000, which is also what one DeleteObjects takes), then pending uploads, then the bucket."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = clients.s3
    what = f"empty bucket {bucket}"
    count = 0
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            batch = [
                {"Key": entry["Key"], "VersionId": entry["VersionId"]}
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if not batch:
                continue
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = answer.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(
                    f"cannot {what}: {len(errors)} object(s) not deleted, e.g. "
                    f"{first.get('Key')}: {first.get('Code')}"
                )
            count += len(batch)
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", []):
                s3.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
    except (ClientError, BotoCoreError) as exc:
        raise _translate(what, exc, clients.endpoint) from None
    _call(clients, f"delete bucket {bucket}", s3.delete_bucket, Bucket=bucket)
    return count
