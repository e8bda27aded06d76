"""Making the changes a ``SetupPlan`` describes: the bucket, then the two IAM users.

Everything this run creates goes into a ``Journal`` that undoes it, in reverse, if any later
step fails (the configs are written last, inside it). Re-running converges: bucket settings and
policies are compared and only rewritten when they differ, and a re-run never creates, rotates
or prints secret keys: AWS shows a secret key once, at creation, and distsync keeps no copy of
it outside the configs it wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from distsync.provision.aws_bucket import ensure_bucket
from distsync.provision.aws_client import AwsClients, call
from distsync.provision.aws_journal import Journal, aws_cli
from distsync.provision.aws_policies import POLICY_NAME, ROLES, USER_PATH, user_name
from distsync.provision.aws_state import SetupPlan, UserState
from distsync.provision.options import Say

__all__ = ["AccessKey", "SetupOutcome", "apply_setup"]


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
    journal = Journal()
    try:
        changed = ensure_bucket(clients, plan, journal, say)
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


def _create_user(
    clients: AwsClients, plan: SetupPlan, role: str, journal: Journal, say: Say
) -> AccessKey:
    iam = clients.iam
    name = user_name(plan.setup_id, role)
    call(
        clients,
        f"create IAM user {name}",
        iam.create_user,
        UserName=name,
        Path=USER_PATH,
        Tags=plan.tags(role),
    )
    journal.add(
        f"IAM user {name}",
        lambda: iam.delete_user(UserName=name),
        aws_cli(clients, f"iam delete-user --user-name {name}"),
    )
    document = json.dumps(plan.policies()[role], separators=(",", ":"))
    call(
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
        aws_cli(clients, f"iam delete-user-policy --user-name {name} --policy-name {POLICY_NAME}"),
    )
    found = call(
        clients, f"create an access key for IAM user {name}", iam.create_access_key, UserName=name
    )["AccessKey"]
    key = AccessKey(found["AccessKeyId"], found["SecretAccessKey"])
    journal.add(
        f"access key {key.access_key_id} of IAM user {name}",
        lambda: iam.delete_access_key(UserName=name, AccessKeyId=key.access_key_id),
        aws_cli(
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
        call(
            clients,
            f"update the policy of IAM user {user.name}",
            iam.put_user_policy,
            UserName=user.name,
            PolicyName=POLICY_NAME,
            PolicyDocument=json.dumps(want, separators=(",", ":")),
        )
        notes.append("policy updated" if user.policy is not None else "policy restored")
        changed = True
    wanted_tags = {tag["Key"]: tag["Value"] for tag in plan.tags(user.role)}
    if any(user.tags.get(key) != value for key, value in wanted_tags.items()):
        call(
            clients,
            f"tag IAM user {user.name}",
            iam.tag_user,
            UserName=user.name,
            Tags=plan.tags(user.role),
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
