"""``distsync setup --destroy ID``: remove what one setup id made, and nothing else.

Only users and a bucket that carry this setup id's tag are touched; the bucket is kept unless
``delete_bucket`` is given. A second run finds nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distsync.errors import DistsyncError, StorageError
from distsync.provision.aws_client import AwsClients, call, lookup, translate
from distsync.provision.aws_policies import (
    POLICY_NAME,
    ROLES,
    TAG_BUCKET,
    TAG_SETUP_ID,
    default_bucket,
    user_name,
    validate_bucket,
)
from distsync.provision.aws_state import UserState, has_bucket, read_bucket_tags, read_user
from distsync.provision.options import Say

__all__ = ["DestroyOutcome", "destroy"]


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
        state = read_user(clients, role, name)
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
    if not has_bucket(clients, name):
        say(f"bucket {name}: not there (nothing to remove)")
    elif read_bucket_tags(clients, name).get(TAG_SETUP_ID) != setup_id:
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
        lookup(
            clients,
            f"delete access key {key_id} of {name}",
            iam.delete_access_key,
            UserName=name,
            AccessKeyId=key_id,
        )
    for policy in ([POLICY_NAME] if state.policy is not None else []) + state.other_policies:
        lookup(
            clients,
            f"delete policy {policy} of {name}",
            iam.delete_user_policy,
            UserName=name,
            PolicyName=policy,
        )
    attached = call(
        clients,
        f"list managed policies of {name}",
        iam.list_attached_user_policies,
        UserName=name,
    )
    for policy in attached.get("AttachedPolicies", []):
        call(
            clients,
            f"detach policy {policy['PolicyName']} from {name}",
            iam.detach_user_policy,
            UserName=name,
            PolicyArn=policy["PolicyArn"],
        )
    lookup(clients, f"delete IAM user {name}", iam.delete_user, UserName=name)


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
        raise translate(what, exc, clients.endpoint) from None
    call(clients, f"delete bucket {bucket}", s3.delete_bucket, Bucket=bucket)
    return count
