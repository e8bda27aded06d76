"""Names, validation and the IAM policies of an S3 setup: pure functions, no boto3.

What one setup id owns (names carry the id, tags record it, so ``--destroy ID`` only ever
removes what setup made):

- the bucket ``distsync-ID`` (or ``--bucket``): private, public access blocked, ACLs off,
  default encryption, versioning on, and ``lifecycle_rules()``: incomplete multipart uploads
  aborted, old versions expired after a grace period, and the status and peer records of
  servers that stopped rewriting them expired;
- the IAM users ``distsync-ID-uploader`` and ``distsync-ID-daemon`` (path ``/distsync/``),
  each with one inline policy from ``build_policies`` and one access key.

``setup_admin_policy`` is what the identity that runs setup itself needs (docs/setup-s3.md).
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from distsync.errors import UsageError

__all__ = [
    "ABORT_MULTIPART_DAYS",
    "DEFAULT_PREFIX",
    "LIFECYCLE_RULE_ID",
    "NONCURRENT_VERSION_DAYS",
    "POLICY_NAME",
    "PRUNED_CONTENT_DAYS",
    "PRUNED_RULE_ID",
    "RECORD_EXPIRY_DAYS",
    "RECORD_RULE_IDS",
    "ROLES",
    "TAG_BUCKET",
    "TAG_LOG_CONDITION",
    "TAG_PREFIX",
    "TAG_ROLE",
    "TAG_SETUP_ID",
    "USER_PATH",
    "build_policies",
    "default_bucket",
    "lifecycle_rule",
    "lifecycle_rules",
    "new_setup_id",
    "normalize_prefix",
    "setup_admin_policy",
    "user_name",
    "validate_bucket",
    "validate_endpoint",
    "validate_region",
    "validate_setup_id",
]

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
# Servers rewrite their status record at least every StatusInterval and their peer record
# while they run; one not rewritten for this long belongs to a server that is gone.
RECORD_EXPIRY_DAYS = 7
RECORD_RULE_IDS = {"status/": "distsync-status-records", "peers/": "distsync-peer-records"}
# In a versioned bucket a pruned content is not gone: it becomes a noncurrent version behind a
# delete marker. Contents are never overwritten (every upload has a new random key), so under
# objects/ a noncurrent version only ever is a pruned one: kept this long (an accidental prune
# can be undone), then expired, and its delete marker with it.
PRUNED_CONTENT_DAYS = 7
PRUNED_RULE_ID = "distsync-pruned-contents"

# Short enough that "distsync-ID-uploader" fits IAM's 64-character user names and
# "distsync-ID" S3's 63-character bucket names; lower case because bucket names must be.
_SETUP_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}")


# -- names and validation ----------------------------------------------------------------


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


def validate_endpoint(url: str) -> str:
    """An S3/IAM-compatible endpoint: an http:// or https:// URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"endpoint {url!r} is not an http:// or https:// URL (like http://127.0.0.1:9000)"
        )
    return url


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


# -- policies ------------------------------------------------------------------------------


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
    ``daemon_peer_records`` is the hook for BitTorrent peer discovery (swarm/peerbook.py): it
    lets the daemon write under ``peers/`` and nowhere else. Records carry an authenticated
    expiry, so nothing needs to delete them.
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
                # DeleteObject also removes the content of an upload whose log claim failed.
                # DeleteObject is retention (`distsync prune`, `upload --keep`): an uploader
                # can publish already, so deleting what it published adds no power over the
                # fleet; it cannot touch the log, the marker, the store record or the servers'
                # records, and cannot delete object versions (s3:DeleteObjectVersion), so a
                # versioned bucket keeps what it pruned. (One statement, not two: IAM allows
                # 2,048 characters of inline policy per user, and long prefixes need them.)
                "Sid": "WriteAndPruneArtifacts",
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                    "s3:DeleteObject",
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
                # `distsync rollout --halt/--continue` (distsync.rollout.halt): one sealed
                # record per version, read back to show it.
                "Sid": "HaltRecords",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": keys("rollout/*"),
            },
            {
                # The marker's hint and the log entries (encrypted manifests) are what versioning
                # and idempotent uploads need to read; the store record tells a wrong secret;
                # the servers' status records are what `upload --wait` and `distsync status` read.
                # Listing objects/ (random keys and sizes) tells `list` and `prune` which
                # versions were pruned and `prune --orphans` what no log entry names.
                "Sid": "ReadLogMarkerAndStatus",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [keys("log/*"), keys("marker"), keys("store"), keys("status/*")],
            },
            {
                "Sid": "ListLogContentsAndStatus",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {
                    "StringLike": {
                        "s3:prefix": [f"{prefix}log/*", f"{prefix}objects/*", f"{prefix}status/*"]
                    }
                },
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
        {
            # Each server's own status record (distsync.status); the uploader cannot write
            # here and the daemon can write nowhere else but peers/.
            "Sid": "StatusRecords",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": keys("status/*"),
        },
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
            {
                # The store record setup writes under the prefix (and reads, so that a store
                # is never replaced by accident).
                "Sid": "StoreRecord",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": buckets + "/*/store",
            },
            {
                # The conditional-create probe (storage/probe.py): racing creates of fresh
                # keys under {prefix}probe/, read back and removed again.
                "Sid": "ProbeConditionalCreate",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": buckets + "/*probe/*",
            },
        ],
    }


# -- bucket settings -----------------------------------------------------------------------


def lifecycle_rule() -> dict[str, Any]:
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


def lifecycle_rules(prefix: str, record_days: int = RECORD_EXPIRY_DAYS) -> list[dict[str, Any]]:
    """Every rule setup owns: ``lifecycle_rule()``, and one per kind of server record that
    expires records not rewritten for ``record_days`` days (a retired server's). A live
    server rewrites its records long before, and readers trust only the sealed expiry
    anyway; this only keeps the listings that ``status`` and the swarm read short."""
    prefix = normalize_prefix(prefix)
    records = [
        {
            "ID": rule_id,
            "Status": "Enabled",
            "Filter": {"Prefix": prefix + leaf},
            "Expiration": {"Days": record_days},
        }
        for leaf, rule_id in RECORD_RULE_IDS.items()
    ]
    pruned = {
        "ID": PRUNED_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": prefix + "objects/"},
        "NoncurrentVersionExpiration": {"NoncurrentDays": PRUNED_CONTENT_DAYS},
        "Expiration": {"ExpiredObjectDeleteMarker": True},
    }
    return [lifecycle_rule(), *records, pruned]
