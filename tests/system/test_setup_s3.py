"""``distsync setup --storage s3`` against a server that enforces IAM (ministack, AUTH=true).

Setup runs as the real CLI, as an admin user that holds only ``setup_admin_policy()``. Then
every claim of the policies is checked by *doing* it with the created identities' keys: each
action an identity needs works, and each action it must not have answers AccessDenied.
The policy builder's own unit tests come first (no server).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from botocore.exceptions import ClientError
from distsync.config import load_config
from distsync.errors import UsageError
from distsync.provision import SetupOptions, fill_in_interactively
from distsync.provision import aws_policies as aws

# tests/system is on sys.path (pytest's default "prepend" import mode, no __init__.py).
from iamserver import ROOT, IamServer, Keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PREFIX = "distsync/v3/"


# -- the policy builder (pure) ---------------------------------------------------------------


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return list(policy["Statement"])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (action, resource) pair the policy allows, conditions aside."""
    return {
        (action, resource)
        for st in _statements(policy)
        if st["Effect"] == "Allow"
        for action in _as_list(st["Action"])
        for resource in _as_list(st["Resource"])
    }


def test_uploader_policy_allows_exactly_what_uploads_need() -> None:
    uploader = aws.build_policies("distsync-x")["uploader"]
    obj = "arn:aws:s3:::distsync-x/distsync/v3/"
    assert _grants(uploader) == {
        ("s3:PutObject", obj + "objects/*"),
        ("s3:AbortMultipartUpload", obj + "objects/*"),
        ("s3:ListMultipartUploadParts", obj + "objects/*"),
        ("s3:DeleteObject", obj + "objects/*"),
        ("s3:PutObject", obj + "log/*"),
        ("s3:PutObject", obj + "marker"),
        ("s3:GetObject", obj + "log/*"),
        ("s3:GetObject", obj + "marker"),
        ("s3:GetObject", obj + "store"),
        ("s3:GetObject", obj + "status/*"),
        ("s3:PutObject", obj + "rollout/*"),  # halt records (distsync rollout --halt)
        ("s3:GetObject", obj + "rollout/*"),
        ("s3:ListBucket", "arn:aws:s3:::distsync-x"),
    }
    # Retention deletes contents and nothing else: no log entry, marker, record or version.
    deletes = {(a, r) for a, r in _grants(uploader) if a.startswith("s3:Delete")}
    assert deletes == {("s3:DeleteObject", obj + "objects/*")}
    assert ("s3:GetObject", obj + "objects/*") not in _grants(uploader)
    listing = next(st for st in _statements(uploader) if st["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {
        "StringLike": {
            "s3:prefix": ["distsync/v3/log/*", "distsync/v3/objects/*", "distsync/v3/status/*"]
        }
    }


def test_daemon_policy_reads_writes_only_status_and_peer_records_are_opt_in() -> None:
    daemon = aws.build_policies("distsync-x", "team/a")["daemon"]
    assert _grants(daemon) == {
        ("s3:ListBucket", "arn:aws:s3:::distsync-x"),
        ("s3:GetObject", "arn:aws:s3:::distsync-x/team/a/*"),
        ("s3:PutObject", "arn:aws:s3:::distsync-x/team/a/status/*"),
    }
    listing = next(st for st in _statements(daemon) if st["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["team/a/*"]}}
    with_peers = aws.build_policies("distsync-x", daemon_peer_records=True)
    writes = {
        (action, resource)
        for action, resource in _grants(with_peers["daemon"])
        if action != "s3:GetObject" and action != "s3:ListBucket"
    }
    assert writes == {
        ("s3:PutObject", "arn:aws:s3:::distsync-x/distsync/v3/status/*"),
        ("s3:PutObject", "arn:aws:s3:::distsync-x/distsync/v3/peers/*"),
    }
    # The uploader gains nothing under peers/.
    assert with_peers["uploader"] == aws.build_policies("distsync-x")["uploader"]


def test_conditional_log_puts_the_if_none_match_condition_on_log_writes_only() -> None:
    plain = aws.build_policies("distsync-x")["uploader"]
    strict = aws.build_policies("distsync-x", require_conditional_log=True)["uploader"]
    changed = [(a, b) for a, b in zip(_statements(plain), _statements(strict)) if a != b]
    assert len(changed) == 1
    before, after = changed[0]
    assert after["Resource"].endswith("/distsync/v3/log/*")
    assert after["Condition"] == {"Null": {"s3:if-none-match": "false"}}
    assert {k: v for k, v in after.items() if k != "Condition"} == before


def test_policies_fit_iams_inline_limit_and_follow_the_partition() -> None:
    # IAM allows 2,048 characters (whitespace not counted) of inline policy per user.
    longest = "d" * 63
    for role, policy in aws.build_policies(
        longest,
        "a/very/long/prefix/for/this/fleet",
        require_conditional_log=True,
        daemon_peer_records=True,
    ).items():
        size = len(json.dumps(policy, separators=(",", ":")))
        assert size < 2048, (role, size)
    china = aws.build_policies("distsync-x", partition="aws-cn")
    assert all(
        resource.startswith("arn:aws-cn:s3:::")
        for policy in china.values()
        for _, resource in _grants(policy)
    )


def test_docs_show_exactly_the_policies_setup_puts_in_place() -> None:
    """docs/setup-s3.md prints the documents in full; they must be what the code builds."""
    text = (REPO / "docs" / "setup-s3.md").read_text()
    blocks = dict(re.findall(r"<!-- policy:([a-z-]+) -->\n```json\n(.*?)\n```", text, re.S))
    example = "distsync-3f9c2a1b7e4d"
    built = aws.build_policies(example, require_conditional_log=True)
    peers = aws.build_policies(example, daemon_peer_records=True)["daemon"]["Statement"][-1]
    assert {name: json.loads(body) for name, body in blocks.items()} == {
        "setup-admin": aws.setup_admin_policy(),
        "uploader": built["uploader"],
        "daemon": built["daemon"],
        "daemon-peer-records": peers,
    }


@pytest.mark.parametrize("prefix", ["distsync/v3", "/distsync/v3/", "distsync/v3/"])
def test_prefixes_are_normalized(prefix: str) -> None:
    assert aws.normalize_prefix(prefix) == PREFIX


@pytest.mark.parametrize("prefix", ["", "/", "a//b", "a/../b", "a/*"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(UsageError):
        aws.normalize_prefix(prefix)


def test_setup_ids_make_valid_names() -> None:
    longest = "a" + "-b" * 19 + "c"
    assert len(longest) == 40
    aws.validate_setup_id(longest)
    assert len(aws.user_name(longest, "uploader")) <= 64  # IAM's limit
    assert aws.validate_bucket(aws.default_bucket(longest))
    assert aws.validate_setup_id(aws.new_setup_id())
    for bad in ("", "-a", "a-", "A", "a_b", "a--b", "x" * 41, "a.b"):
        with pytest.raises(UsageError):
            aws.validate_setup_id(bad)
    for region in ("us-east-1", "eu-west-3", "us-gov-west-1", "ap-southeast-5"):
        aws.validate_region(region)
    for bad in ("useast1", "us-east", "US-EAST-1", "moon-1"):
        with pytest.raises(UsageError):
            aws.validate_region(bad)


def test_prompts_offer_the_regions_and_a_setup_id(capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[str] = []
    answers = iter(["s3", "eu-west-3", "", "", "/srv/apps"])

    def ask(question: str) -> str:
        asked.append(question)
        return next(answers)

    options = SetupOptions()
    fill_in_interactively(options, ask)
    out = capsys.readouterr().out
    assert "answer the prompts" in out
    assert "us-east-1" in out and "eu-north-1" in out  # the seed's region list
    assert [q.split(" [")[0] for q in asked] == [
        "Storage (local, s3 or swift)",
        "AWS region",
        "S3 endpoint URL (empty for AWS)",
        "Setup id",
        "Directory the servers install artifacts into",
    ]
    assert options.region == "eu-west-3" and options.endpoint is None
    assert options.setup_id and aws.validate_setup_id(options.setup_id)
    assert options.output_dir == "/srv/apps"


# -- the server, the admin, the CLI ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    with IamServer(tmp_path_factory.mktemp("ministack")) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: IamServer) -> Keys:
    """The identity that runs setup: an IAM user holding only the documented setup policy."""
    return server.user_with_policy("setup-admin", aws.setup_admin_policy())


def _new_id() -> str:
    return "t" + uuid.uuid4().hex[:10]


def _cli_env(home: Path) -> dict[str, str]:
    """run_cli's environment with no AWS credentials: the configs' own keys are used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=os.pathsep.join(
            [str(REPO / "python"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    return env


def run_cli(
    home: Path, *args: str, keys: Keys | None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m distsync ARGS`` as a real process with only ``keys`` as AWS credentials."""
    env = dict(_cli_env(home), XDG_STATE_HOME=str(home / "state"))
    if keys is not None:
        env.update(
            AWS_ACCESS_KEY_ID=keys.access_key_id, AWS_SECRET_ACCESS_KEY=keys.secret_access_key
        )
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "distsync", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def setup_args(server: IamServer, setup_id: str, home: Path, *extra: str) -> list[str]:
    return [
        "setup",
        "--storage",
        "s3",
        "--non-interactive",
        "--setup-id",
        setup_id,
        "--endpoint",
        server.endpoint,
        "--region",
        "us-east-1",
        "--output-dir",
        str(home / "installed"),
        "--upload-config",
        str(home / "uploader.toml"),
        "--daemon-config",
        str(home / "daemon.toml"),
        *extra,
    ]


@dataclass
class Setup:
    setup_id: str
    bucket: str
    home: Path
    uploader: Keys
    daemon: Keys
    result: subprocess.CompletedProcess[str]
    seconds: float

    @property
    def upload_config(self) -> Path:
        return self.home / "uploader.toml"

    @property
    def daemon_config(self) -> Path:
        return self.home / "daemon.toml"


def _keys_of(path: Path) -> Keys:
    cfg = load_config(path)
    assert cfg.aws.access_key and cfg.aws.secret_key
    return Keys(cfg.aws.access_key, cfg.aws.secret_key)


def do_setup(server: IamServer, admin: Keys, home: Path, *extra: str) -> Setup:
    setup_id = _new_id()
    started = time.monotonic()
    result = run_cli(home, *setup_args(server, setup_id, home, *extra), keys=admin)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return Setup(
        setup_id,
        aws.default_bucket(setup_id),
        home,
        _keys_of(home / "uploader.toml"),
        _keys_of(home / "daemon.toml"),
        result,
        seconds,
    )


@pytest.fixture(scope="module")
def provisioned(server: IamServer, admin: Keys, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """One setup shared by the read-only permission tests."""
    done = do_setup(server, admin, tmp_path_factory.mktemp("home"))
    # Something for the daemon to read and the uploader to be refused: written as root.
    root = server.client("s3")
    root.put_object(Bucket=done.bucket, Key=PREFIX + "objects/seed", Body=b"c" * 100)
    root.put_object(Bucket=done.bucket, Key=PREFIX + "log/00000000000000000001", Body=b"m")
    root.put_object(Bucket=done.bucket, Key=PREFIX + "marker", Body=b'{"latest": 1}')
    root.put_object(Bucket=done.bucket, Key=PREFIX + "status/seed", Body=b"s")
    root.put_object(Bucket=done.bucket, Key="outside/secret", Body=b"s")
    return done


def _error(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return int(response["ResponseMetadata"]["HTTPStatusCode"]), str(response["Error"]["Code"])


def assert_denied(call: Callable[[], object]) -> None:
    status, code = _error(call)
    # HEAD answers carry no body, so the code is just the status.
    assert (status, code) in ((403, "AccessDenied"), (403, "403")), (status, code)


# -- what setup made ----------------------------------------------------------------------------


def test_setup_creates_a_private_bucket_two_users_and_0600_configs(
    server: IamServer, provisioned: Setup
) -> None:
    out = provisioned.result.stdout
    assert f"created bucket {provisioned.bucket}" in out
    assert "created IAM user" in out and "wrote" in out
    for path in (provisioned.upload_config, provisioned.daemon_config):
        assert path.stat().st_mode & 0o777 == 0o600
        # No secret in what setup printed: the keys are only in the files.
        secret = load_config(path).aws.secret_key
        assert secret and secret not in out + provisioned.result.stderr
    uploader_cfg, daemon_cfg = (
        load_config(provisioned.upload_config),
        load_config(provisioned.daemon_config),
    )
    assert uploader_cfg.secret == daemon_cfg.secret
    assert uploader_cfg.storage_bucket == daemon_cfg.storage_bucket == provisioned.bucket
    assert uploader_cfg.prefix == daemon_cfg.prefix == PREFIX
    assert (
        uploader_cfg.output_dir is None and daemon_cfg.output_dir == provisioned.home / "installed"
    )
    assert daemon_cfg.aws.endpoint == server.endpoint
    assert provisioned.uploader.access_key_id != provisioned.daemon.access_key_id

    s3, iam = server.client("s3"), server.client("iam")
    block = s3.get_public_access_block(Bucket=provisioned.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rules = s3.get_bucket_encryption(Bucket=provisioned.bucket)["ServerSideEncryptionConfiguration"]
    assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=provisioned.bucket)["Status"] == "Enabled"
    rules = {
        rule["ID"]: rule
        for rule in s3.get_bucket_lifecycle_configuration(Bucket=provisioned.bucket)["Rules"]
    }
    assert sorted(rules) == [
        "distsync",
        "distsync-peer-records",
        "distsync-pruned-contents",
        "distsync-status-records",
    ]
    # Pruned contents (noncurrent versions under objects/) go after 7 days, and their
    # delete markers with them.
    pruned = rules["distsync-pruned-contents"]
    assert pruned["Filter"] == {"Prefix": PREFIX + "objects/"}
    assert pruned["NoncurrentVersionExpiration"]["NoncurrentDays"] == 7
    assert pruned["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    rule = rules["distsync"]
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    # Records of servers that stopped rewriting them expire after 7 days.
    for leaf, rule_id in aws.RECORD_RULE_IDS.items():
        assert rules[rule_id]["Filter"] == {"Prefix": PREFIX + leaf}
        assert rules[rule_id]["Expiration"] == {"Days": 7}
        assert rules[rule_id]["Status"] == "Enabled"
    ownership = s3.get_bucket_ownership_controls(Bucket=provisioned.bucket)["OwnershipControls"]
    assert ownership["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    tags = {
        t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=provisioned.bucket)["TagSet"]
    }
    assert tags["distsync:setup-id"] == provisioned.setup_id

    expected = aws.build_policies(provisioned.bucket)
    for role, keys in (("uploader", provisioned.uploader), ("daemon", provisioned.daemon)):
        name = aws.user_name(provisioned.setup_id, role)
        assert iam.get_user(UserName=name)["User"]["Path"] == "/distsync/"
        assert iam.list_user_policies(UserName=name)["PolicyNames"] == ["distsync"]
        assert iam.list_attached_user_policies(UserName=name)["AttachedPolicies"] == []
        document = iam.get_user_policy(UserName=name, PolicyName="distsync")["PolicyDocument"]
        assert document == expected[role]
        key_ids = [
            k["AccessKeyId"] for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
        ]
        assert key_ids == [keys.access_key_id]


# -- the uploader -------------------------------------------------------------------------------


def test_uploader_can_write_artifacts_append_to_the_log_and_announce(
    server: IamServer, provisioned: Setup
) -> None:
    s3, b = server.client("s3", provisioned.uploader), provisioned.bucket
    s3.put_object(Bucket=b, Key=PREFIX + "objects/small", Body=b"ciphertext")
    # Multipart: create, parts, complete; and aborting its own failed upload.
    upload = s3.create_multipart_upload(Bucket=b, Key=PREFIX + "objects/big")["UploadId"]
    part = s3.upload_part(
        Bucket=b, Key=PREFIX + "objects/big", UploadId=upload, PartNumber=1, Body=b"x" * 1024
    )
    s3.list_parts(Bucket=b, Key=PREFIX + "objects/big", UploadId=upload)
    s3.complete_multipart_upload(
        Bucket=b,
        Key=PREFIX + "objects/big",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    dropped = s3.create_multipart_upload(Bucket=b, Key=PREFIX + "objects/dropped")["UploadId"]
    s3.abort_multipart_upload(Bucket=b, Key=PREFIX + "objects/dropped", UploadId=dropped)
    # Taking back the content of an upload whose log claim failed.
    s3.delete_object(Bucket=b, Key=PREFIX + "objects/big")
    root = server.client("s3")
    assert _error(lambda: root.head_object(Bucket=b, Key=PREFIX + "objects/big"))[0] == 404
    # The log: claim an entry with a conditional create, read entries back, list after a key.
    entry = PREFIX + "log/00000000000000000002"
    s3.put_object(Bucket=b, Key=entry, Body=b"manifest", IfNoneMatch="*")
    assert _error(lambda: s3.put_object(Bucket=b, Key=entry, Body=b"x", IfNoneMatch="*")) == (
        412,
        "PreconditionFailed",
    )
    assert s3.get_object(Bucket=b, Key=entry)["Body"].read() == b"manifest"
    listed = s3.list_objects_v2(
        Bucket=b, Prefix=PREFIX + "log/", StartAfter=PREFIX + "log/00000000000000000001"
    )
    assert entry in [item["Key"] for item in listed.get("Contents", [])]
    # The marker: rewrite it, read its hint.
    s3.put_object(Bucket=b, Key=PREFIX + "marker", Body=b'{"latest": 2}')
    assert s3.get_object(Bucket=b, Key=PREFIX + "marker")["Body"].read() == b'{"latest": 2}'
    # The servers' status records (upload --wait, distsync status): list and read, not write.
    listed = s3.list_objects_v2(Bucket=b, Prefix=PREFIX + "status/")
    assert PREFIX + "status/seed" in [item["Key"] for item in listed.get("Contents", [])]
    assert s3.get_object(Bucket=b, Key=PREFIX + "status/seed")["Body"].read() == b"s"
    # Retention: list the contents (which versions were pruned) and delete one.
    listed = s3.list_objects_v2(Bucket=b, Prefix=PREFIX + "objects/")
    assert PREFIX + "objects/small" in [item["Key"] for item in listed.get("Contents", [])]
    s3.delete_object(Bucket=b, Key=PREFIX + "objects/small")
    root = server.client("s3")
    assert _error(lambda: root.head_object(Bucket=b, Key=PREFIX + "objects/small"))[0] == 404


@pytest.mark.parametrize(
    "what",
    [
        "get an artifact",
        "HEAD an artifact",
        "read an artifact by range",
        "presign an artifact",
        "delete an artifact's version",
        "delete a log entry",
        "delete the marker",
        "delete the store record",
        "delete a status record",
        "put outside the prefix",
        "put elsewhere under the prefix",
        "put a peer record",
        "put a status record",
        "list the whole bucket",
        "list versions",
        "read outside the prefix",
        "suspend versioning",
        "set a bucket policy",
        "delete the bucket",
        "create itself another access key",
    ],
)
def test_uploader_is_refused(server: IamServer, provisioned: Setup, what: str) -> None:
    assert_denied(lambda: _attempt(server, provisioned, provisioned.uploader, what))


def test_uploader_cannot_batch_delete(server: IamServer, provisioned: Setup) -> None:
    s3 = server.client("s3", provisioned.uploader)
    # (Contents it may delete one by one: retention. Everything else, not even in a batch.)
    keys = [PREFIX + "log/00000000000000000001", PREFIX + "marker", PREFIX + "status/seed"]
    try:
        answer = s3.delete_objects(
            Bucket=provisioned.bucket, Delete={"Objects": [{"Key": k} for k in keys]}
        )
    except ClientError as exc:  # ministack refuses the whole request
        assert exc.response["Error"]["Code"] == "AccessDenied"
    else:  # AWS answers 200 with one error per key
        assert not answer.get("Deleted")
        assert {e["Code"] for e in answer["Errors"]} == {"AccessDenied"}
    root = server.client("s3")
    for key in keys:
        root.head_object(Bucket=provisioned.bucket, Key=key)  # all still there


def test_an_overwritten_log_entry_stays_recoverable(server: IamServer, provisioned: Setup) -> None:
    """Without the s3:if-none-match condition (which this server does not evaluate, see below)
    the uploader *can* replace a log entry with an unconditional PUT; versioning keeps the
    original, so an operator can restore it. Readers reject a forged entry either way."""
    s3, b = server.client("s3", provisioned.uploader), provisioned.bucket
    entry = PREFIX + "log/00000000000000000007"
    s3.put_object(Bucket=b, Key=entry, Body=b"original", IfNoneMatch="*")
    s3.put_object(Bucket=b, Key=entry, Body=b"forged")
    versions = server.client("s3").list_object_versions(Bucket=b, Prefix=entry)["Versions"]
    bodies = {
        server.client("s3").get_object(Bucket=b, Key=entry, VersionId=v["VersionId"])["Body"].read()
        for v in versions
    }
    assert bodies == {b"original", b"forged"}


def test_required_conditional_log_on_this_server(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    """``--require-conditional-log`` (the default on AWS) adds ``"Null":
    {"s3:if-none-match": "false"}`` to log writes. ministack 1.5 does not fill in that key, so
    the condition never holds here: unconditional overwrites are refused (good) but so are
    conditional creates, i.e. every upload would fail. That is why it is off by default for
    --endpoint. If this test fails on the second assertion, ministack started evaluating the
    key: test the full flow with it on."""
    done = do_setup(server, admin, tmp_path, "--require-conditional-log")
    s3, b = server.client("s3", done.uploader), done.bucket
    entry = PREFIX + "log/00000000000000000001"
    assert_denied(lambda: s3.put_object(Bucket=b, Key=entry, Body=b"x"))
    assert_denied(lambda: s3.put_object(Bucket=b, Key=entry, Body=b"x", IfNoneMatch="*"))
    # The rest of the uploader's rights are unaffected.
    s3.put_object(Bucket=b, Key=PREFIX + "objects/a", Body=b"x")
    s3.put_object(Bucket=b, Key=PREFIX + "marker", Body=b"{}")
    policy = server.client("iam").get_user_policy(
        UserName=aws.user_name(done.setup_id, "uploader"), PolicyName="distsync"
    )["PolicyDocument"]
    assert policy == aws.build_policies(b, require_conditional_log=True)["uploader"]


# -- the daemon ---------------------------------------------------------------------------------


def test_daemon_can_list_and_read_everything_under_the_prefix(
    server: IamServer, provisioned: Setup
) -> None:
    s3, b = server.client("s3", provisioned.daemon), provisioned.bucket
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=b, Prefix=PREFIX).get("Contents", [])]
    assert PREFIX + "objects/seed" in keys and PREFIX + "marker" in keys
    s3.list_objects_v2(Bucket=b, Prefix=PREFIX + "log/", StartAfter=PREFIX + "log/0")
    assert (
        s3.get_object(Bucket=b, Key=PREFIX + "objects/seed", Range="bytes=10-19")["Body"].read()
        == b"c" * 10
    )
    assert s3.head_object(Bucket=b, Key=PREFIX + "objects/seed")["ContentLength"] == 100
    s3.get_object(Bucket=b, Key=PREFIX + "log/00000000000000000001")
    # The poll: a conditional HEAD of the marker answers 304 while it is unchanged.
    tag = s3.head_object(Bucket=b, Key=PREFIX + "marker")["ETag"]
    assert (
        _error(lambda: s3.head_object(Bucket=b, Key=PREFIX + "marker", IfNoneMatch=tag))[0] == 304
    )
    # A presigned URL (a BitTorrent web seed) made with the daemon's key works.
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": b, "Key": PREFIX + "objects/seed"}
    )
    with urllib.request.urlopen(url, timeout=10) as answer:  # loopback test server
        assert answer.read() == b"c" * 100


def test_daemon_can_write_status_records_and_nothing_else(
    server: IamServer, provisioned: Setup
) -> None:
    s3, b = server.client("s3", provisioned.daemon), provisioned.bucket
    key = PREFIX + "status/" + "d" * 32
    s3.put_object(Bucket=b, Key=key, Body=b"sealed record")
    s3.put_object(Bucket=b, Key=key, Body=b"rewritten")  # each heartbeat rewrites it
    assert s3.get_object(Bucket=b, Key=key)["Body"].read() == b"rewritten"
    assert_denied(lambda: s3.delete_object(Bucket=b, Key=key))
    assert_denied(lambda: s3.put_object(Bucket=b, Key=PREFIX + "statusx", Body=b"x"))


@pytest.mark.parametrize(
    "what",
    [
        "put an artifact",
        "start a multipart upload",
        "put a log entry",
        "rewrite the marker",
        "put a peer record",
        "put outside the prefix",
        "delete an artifact",
        "delete a log entry",
        "delete the marker",
        "list the whole bucket",
        "read outside the prefix",
        "suspend versioning",
        "set a bucket policy",
        "delete the bucket",
        "create itself another access key",
    ],
)
def test_daemon_is_refused(server: IamServer, provisioned: Setup, what: str) -> None:
    assert_denied(lambda: _attempt(server, provisioned, provisioned.daemon, what))


def test_an_identity_without_a_policy_gets_nothing(server: IamServer, provisioned: Setup) -> None:
    nobody = server.user_with_policy(f"nobody-{provisioned.setup_id}", None)
    for what in (
        "get an artifact",
        "HEAD an artifact",
        "read a log entry",
        "HEAD the marker",
        "presign an artifact",
        "list the log",
        "list the whole bucket",
        "put an artifact",
        "put a log entry",
        "rewrite the marker",
        "delete an artifact",
        "create itself another access key",
    ):
        assert_denied(functools.partial(_attempt, server, provisioned, nobody, what))


class _PresignDenied(ClientError):
    pass


def _presigned_get(s3: Any, bucket: str, key: str) -> bytes:
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # loopback test server
            return bytes(answer.read())
    except urllib.error.HTTPError as exc:
        raise _PresignDenied(
            {
                "Error": {"Code": "AccessDenied" if exc.code == 403 else str(exc.code)},
                "ResponseMetadata": {"HTTPStatusCode": exc.code},
            },
            "GetObject (presigned)",
        ) from None


def _attempt(server: IamServer, provisioned: Setup, keys: Keys, what: str) -> object:
    """One action by ``keys`` against the shared setup's bucket."""
    s3, b = server.client("s3", keys), provisioned.bucket
    artifact, entry, marker = (
        PREFIX + "objects/seed",
        PREFIX + "log/00000000000000000001",
        PREFIX + "marker",
    )
    actions: dict[str, Callable[[], object]] = {
        "get an artifact": lambda: s3.get_object(Bucket=b, Key=artifact),
        "HEAD an artifact": lambda: s3.head_object(Bucket=b, Key=artifact),
        "read an artifact by range": lambda: s3.get_object(
            Bucket=b, Key=artifact, Range="bytes=0-9"
        ),
        "presign an artifact": lambda: _presigned_get(s3, b, artifact),
        "read a log entry": lambda: s3.get_object(Bucket=b, Key=entry),
        "HEAD the marker": lambda: s3.head_object(Bucket=b, Key=marker),
        "delete an artifact": lambda: s3.delete_object(Bucket=b, Key=artifact),
        "delete a log entry": lambda: s3.delete_object(Bucket=b, Key=entry),
        "delete an artifact's version": lambda: s3.delete_object(
            Bucket=b,
            Key=artifact,
            VersionId=server.client("s3").head_object(Bucket=b, Key=artifact)["VersionId"],
        ),
        "delete the store record": lambda: s3.delete_object(Bucket=b, Key=PREFIX + "store"),
        "delete a status record": lambda: s3.delete_object(Bucket=b, Key=PREFIX + "status/seed"),
        "delete the marker": lambda: s3.delete_object(Bucket=b, Key=marker),
        "put an artifact": lambda: s3.put_object(Bucket=b, Key=PREFIX + "objects/new", Body=b"x"),
        "start a multipart upload": lambda: s3.create_multipart_upload(
            Bucket=b, Key=PREFIX + "objects/new"
        ),
        "put a log entry": lambda: s3.put_object(
            Bucket=b, Key=PREFIX + "log/00000000000000000099", Body=b"x", IfNoneMatch="*"
        ),
        "rewrite the marker": lambda: s3.put_object(Bucket=b, Key=marker, Body=b"{}"),
        "put a peer record": lambda: s3.put_object(Bucket=b, Key=PREFIX + "peers/me", Body=b"x"),
        "put a status record": lambda: s3.put_object(
            Bucket=b, Key=PREFIX + "status/" + "a" * 32, Body=b"x"
        ),
        "read a status record": lambda: s3.get_object(Bucket=b, Key=PREFIX + "status/seed"),
        "list the status records": lambda: s3.list_objects_v2(Bucket=b, Prefix=PREFIX + "status/"),
        "put outside the prefix": lambda: s3.put_object(Bucket=b, Key="outside/x", Body=b"x"),
        "put elsewhere under the prefix": lambda: s3.put_object(
            Bucket=b, Key=PREFIX + "other", Body=b"x"
        ),
        "list the log": lambda: s3.list_objects_v2(Bucket=b, Prefix=PREFIX + "log/"),
        "list the whole bucket": lambda: s3.list_objects_v2(Bucket=b),
        "list artifacts": lambda: s3.list_objects_v2(Bucket=b, Prefix=PREFIX + "objects/"),
        "list versions": lambda: s3.list_object_versions(Bucket=b, Prefix=PREFIX),
        "read outside the prefix": lambda: s3.get_object(Bucket=b, Key="outside/secret"),
        "suspend versioning": lambda: s3.put_bucket_versioning(
            Bucket=b, VersioningConfiguration={"Status": "Suspended"}
        ),
        "set a bucket policy": lambda: s3.put_bucket_policy(
            Bucket=b,
            Policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "s3:GetObject",
                            "Resource": f"arn:aws:s3:::{b}/*",
                        }
                    ],
                }
            ),
        ),
        "delete the bucket": lambda: s3.delete_bucket(Bucket=b),
        "create itself another access key": lambda: server.client("iam", keys).create_access_key(),
    }
    return actions[what]()


# -- re-running ----------------------------------------------------------------------------------


def _snapshot(server: IamServer, done: Setup) -> dict[str, Any]:
    s3, iam = server.client("s3"), server.client("iam")
    state: dict[str, Any] = {
        "lifecycle": s3.get_bucket_lifecycle_configuration(Bucket=done.bucket)["Rules"],
        "versioning": s3.get_bucket_versioning(Bucket=done.bucket).get("Status"),
        "configs": [done.upload_config.read_bytes(), done.daemon_config.read_bytes()],
    }
    for role in aws.ROLES:
        name = aws.user_name(done.setup_id, role)
        state[role] = (
            iam.get_user_policy(UserName=name, PolicyName="distsync")["PolicyDocument"],
            [k["AccessKeyId"] for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]],
        )
    return state


def test_record_expiry_is_configurable_and_a_rerun_keeps_it(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    done = do_setup(server, admin, tmp_path, "--record-expiry-days", "3")
    s3 = server.client("s3")

    def record_days() -> set[int]:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=done.bucket)["Rules"]
        return {r["Expiration"]["Days"] for r in rules if r["ID"] in aws.RECORD_RULE_IDS.values()}

    assert record_days() == {3}
    again = run_cli(tmp_path, *setup_args(server, done.setup_id, tmp_path), keys=admin)
    assert again.returncode == 0, again.stderr
    assert "settings as expected (unchanged)" in again.stdout
    assert record_days() == {3}
    bad = run_cli(
        tmp_path,
        *setup_args(server, done.setup_id, tmp_path, "--record-expiry-days", "0"),
        keys=admin,
    )
    assert bad.returncode == 2 and "--record-expiry-days 0" in bad.stderr


def test_rerun_with_the_same_id_changes_nothing_and_says_what_exists(
    server: IamServer, admin: Keys, provisioned: Setup
) -> None:
    before = _snapshot(server, provisioned)
    again = run_cli(
        provisioned.home,
        *setup_args(server, provisioned.setup_id, provisioned.home, "--force"),
        keys=admin,
    )
    assert again.returncode == 0, again.stderr
    out = again.stdout
    assert f"bucket {provisioned.bucket} exists" in out and "(unchanged)" in out
    assert "IAM user" in out and "1 access key" in out
    assert "nothing changed" in out
    assert "wrote" not in out
    assert "--force does not rewrite the configs" in out
    assert "left as it is (this setup's uploader" in out
    assert _snapshot(server, provisioned) == before


def test_rerun_elsewhere_cannot_recreate_the_configs(
    server: IamServer, admin: Keys, provisioned: Setup, tmp_path: Path
) -> None:
    again = run_cli(tmp_path, *setup_args(server, provisioned.setup_id, tmp_path), keys=admin)
    assert again.returncode == 0, again.stderr
    assert "cannot be written again" in again.stdout
    assert not (tmp_path / "uploader.toml").exists() and not (tmp_path / "daemon.toml").exists()


def test_rerun_repairs_drift(server: IamServer, admin: Keys, tmp_path: Path) -> None:
    done = do_setup(server, admin, tmp_path)
    s3, iam = server.client("s3"), server.client("iam")
    name = aws.user_name(done.setup_id, "daemon")
    widened = copy.deepcopy(aws.build_policies(done.bucket)["daemon"])
    widened["Statement"].append(
        {"Effect": "Allow", "Action": "s3:*", "Resource": f"arn:aws:s3:::{done.bucket}/*"}
    )
    iam.put_user_policy(UserName=name, PolicyName="distsync", PolicyDocument=json.dumps(widened))
    s3.put_bucket_versioning(Bucket=done.bucket, VersioningConfiguration={"Status": "Suspended"})
    again = run_cli(tmp_path, *setup_args(server, done.setup_id, tmp_path), keys=admin)
    assert again.returncode == 0, again.stderr
    assert "updated: versioning" in again.stdout and "policy updated" in again.stdout
    assert "created or updated" in again.stdout
    document = iam.get_user_policy(UserName=name, PolicyName="distsync")["PolicyDocument"]
    assert document == aws.build_policies(done.bucket)["daemon"]
    assert s3.get_bucket_versioning(Bucket=done.bucket)["Status"] == "Enabled"


# -- refusals and failures --------------------------------------------------------------------


def _leftovers(server: IamServer, setup_id: str) -> list[str]:
    iam = server.client("iam")
    users = [
        u["UserName"]
        for u in iam.list_users()["Users"]
        if u["UserName"].startswith(f"distsync-{setup_id}-")
    ]
    buckets = [
        b["Name"]
        for b in server.client("s3").list_buckets()["Buckets"]
        if b["Name"] == aws.default_bucket(setup_id)
    ]
    return users + buckets


def test_existing_configs_are_refused_before_anything_is_created(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    setup_id = _new_id()
    (tmp_path / "uploader.toml").write_text("keep me")
    result = run_cli(tmp_path, *setup_args(server, setup_id, tmp_path), keys=admin)
    assert result.returncode == 2
    assert "already exists (pass --force to replace it)" in result.stderr
    assert (tmp_path / "uploader.toml").read_text() == "keep me"
    assert _leftovers(server, setup_id) == []


def test_a_failure_halfway_rolls_back_what_the_run_created(
    server: IamServer, tmp_path: Path
) -> None:
    # An admin that may do everything but create access keys: setup gets as far as the
    # bucket, the first user and its policy, then fails.
    policy = aws.setup_admin_policy()
    policy["Statement"][2]["Action"].remove("iam:CreateAccessKey")
    weak = server.user_with_policy(f"weak-admin-{uuid.uuid4().hex[:6]}", policy)
    setup_id = _new_id()
    result = run_cli(tmp_path, *setup_args(server, setup_id, tmp_path), keys=weak)
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "cannot create an access key" in errors[0]
    assert "AccessDenied" in errors[0]
    assert "removed what this run had created" in result.stderr
    assert "Traceback" not in result.stderr and weak.secret_access_key not in result.stderr
    assert _leftovers(server, setup_id) == []
    assert not (tmp_path / "uploader.toml").exists() and not (tmp_path / "daemon.toml").exists()


def test_a_rollback_that_cannot_finish_says_exactly_what_is_left(
    server: IamServer, tmp_path: Path
) -> None:
    policy = aws.setup_admin_policy()
    for action in ("iam:CreateAccessKey", "iam:DeleteUser"):
        policy["Statement"][2]["Action"].remove(action)
    policy["Statement"][0]["Action"].remove("s3:DeleteBucket")
    weak = server.user_with_policy(f"weaker-admin-{uuid.uuid4().hex[:6]}", policy)
    setup_id = _new_id()
    result = run_cli(tmp_path, *setup_args(server, setup_id, tmp_path), keys=weak)
    assert result.returncode == 4
    user, bucket = aws.user_name(setup_id, "uploader"), aws.default_bucket(setup_id)
    assert "could NOT remove" in result.stderr
    assert f"aws --endpoint-url {server.endpoint} iam delete-user --user-name {user}" in (
        result.stderr
    )
    assert f"s3api delete-bucket --bucket {bucket}" in result.stderr
    assert sorted(_leftovers(server, setup_id)) == sorted([user, bucket])
    # What is left is still tagged, so the documented teardown removes it.
    cleanup = run_cli(
        tmp_path,
        "setup",
        "--destroy",
        setup_id,
        "--delete-bucket",
        "--endpoint",
        server.endpoint,
        "--non-interactive",
        keys=ROOT,
    )
    assert cleanup.returncode == 0, cleanup.stderr
    assert _leftovers(server, setup_id) == []


def test_a_bucket_that_setup_did_not_make_is_refused(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    setup_id = _new_id()
    server.client("s3").create_bucket(Bucket=aws.default_bucket(setup_id))
    result = run_cli(tmp_path, *setup_args(server, setup_id, tmp_path), keys=admin)
    assert result.returncode == 2
    assert "was not made by `distsync setup`" in result.stderr
    # Only the bucket root made is there: no user, and the bucket was not touched.
    assert _leftovers(server, setup_id) == [aws.default_bucket(setup_id)]
    tags = server.client("s3").get_bucket_versioning(Bucket=aws.default_bucket(setup_id))
    assert "Status" not in tags


def test_clear_errors_without_credentials_or_server(server: IamServer, tmp_path: Path) -> None:
    result = run_cli(tmp_path, *setup_args(server, _new_id(), tmp_path), keys=None)
    assert result.returncode == 2 and "no AWS credentials for setup" in result.stderr
    bad = run_cli(tmp_path, *setup_args(server, "Bad_Id", tmp_path), keys=ROOT)
    assert bad.returncode == 2 and "setup id 'Bad_Id'" in bad.stderr
    local = run_cli(tmp_path, "setup", "--storage", "local", "--setup-id", "x", keys=ROOT)
    assert local.returncode == 2 and "go with --storage s3" in local.stderr
    stray = run_cli(tmp_path, "setup", "--delete-bucket", "--non-interactive", keys=ROOT)
    assert stray.returncode == 2 and "--delete-bucket goes with --destroy" in stray.stderr
    wrong = run_cli(
        tmp_path, *setup_args(server, _new_id(), tmp_path), keys=Keys("AKIANOSUCHKEY0000000", "x")
    )
    assert wrong.returncode == 4 and "cannot identify the AWS credentials" in wrong.stderr
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{sock.getsockname()[1]}"
    args = setup_args(server, _new_id(), tmp_path)
    args[args.index(server.endpoint)] = nowhere
    unreachable = run_cli(tmp_path, *args, keys=ROOT)
    assert unreachable.returncode == 4 and f"cannot reach {nowhere}" in unreachable.stderr
    for run in (result, bad, local, stray, wrong, unreachable):
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "uploader.toml").exists()


# -- teardown --------------------------------------------------------------------------------------


def test_destroy_removes_users_keys_and_policies_then_the_bucket(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    done = do_setup(server, admin, tmp_path)
    s3 = server.client("s3", done.uploader)
    # Versions of one key, plus a pending multipart upload.
    for body in (b"1", b"2", b"3"):
        s3.put_object(Bucket=done.bucket, Key=PREFIX + "marker", Body=body)
    s3.create_multipart_upload(Bucket=done.bucket, Key=PREFIX + "objects/pending")
    destroy = ["setup", "--destroy", done.setup_id, "--endpoint", server.endpoint]

    first = run_cli(tmp_path, *destroy, keys=admin)
    assert first.returncode == 0, first.stderr
    assert "kept bucket" in first.stdout
    assert _leftovers(server, done.setup_id) == [done.bucket]
    iam = server.client("iam")
    for role in aws.ROLES:
        lookup = functools.partial(iam.get_user, UserName=aws.user_name(done.setup_id, role))
        assert _error(lookup) == (404, "NoSuchEntity")
    # The deleted keys no longer work at all.
    status, _ = _error(lambda: s3.put_object(Bucket=done.bucket, Key=PREFIX + "marker", Body=b""))
    assert status == 403

    second = run_cli(tmp_path, *destroy, "--delete-bucket", keys=admin)
    assert second.returncode == 0, second.stderr
    # Three versions of the marker and the store record setup wrote, and the versions and
    # delete markers of the keys setup's probe of the conditional create raced for.
    removed = re.search(rf"removed bucket {done.bucket} and (\d+) object version", second.stdout)
    assert removed is not None and int(removed[1]) > 4, second.stdout
    assert _leftovers(server, done.setup_id) == []
    third = run_cli(tmp_path, *destroy, "--delete-bucket", keys=admin)
    assert third.returncode == 0 and "removed: nothing" in third.stdout


def test_destroy_leaves_users_it_did_not_make_alone(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    setup_id = _new_id()
    server.user_with_policy(aws.user_name(setup_id, "uploader"), None)  # no distsync tags
    result = run_cli(
        tmp_path, "setup", "--destroy", setup_id, "--endpoint", server.endpoint, keys=admin
    )
    assert result.returncode == 4
    assert "has no distsync:setup-id" in result.stderr and "left alone" in result.stderr
    assert _leftovers(server, setup_id) == [aws.user_name(setup_id, "uploader")]


def run_on_terminal(
    home: Path, args: list[str], keys: Keys, answers: dict[str, str], timeout: float = 60
) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, typing ``answers[prompt]`` when ``prompt`` shows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID=keys.access_key_id,
        AWS_SECRET_ACCESS_KEY=keys.secret_access_key,
        PYTHONPATH=str(REPO / "python"),
    )
    main, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "distsync", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    screen, pending = "", dict(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096).decode(errors="replace")
                except OSError:  # the process closed the terminal
                    break
                screen += chunk
                for prompt in list(pending):
                    if prompt in screen:
                        os.write(main, pending.pop(prompt).encode() + b"\n")
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), screen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)


def test_on_a_terminal_setup_prompts_and_teardown_asks_first(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    setup_id = _new_id()
    args = setup_args(server, setup_id, tmp_path)
    args.remove("--non-interactive")
    for flag in ("--output-dir", "--region"):
        del args[args.index(flag) : args.index(flag) + 2]
    code, screen = run_on_terminal(
        tmp_path,
        args,
        admin,
        {
            "AWS region [us-east-1]": "",
            "Directory the servers install artifacts into": str(tmp_path / "srv"),
        },
    )
    assert code == 0, screen
    assert "answer the prompts" in screen
    assert "Regions: us-east-1, us-east-2" in screen and "sa-east-1" in screen
    assert load_config(tmp_path / "daemon.toml").output_dir == tmp_path / "srv"
    assert "SecretKey" not in screen and admin.secret_access_key not in screen

    destroy = ["setup", "--destroy", setup_id, "--delete-bucket", "--endpoint", server.endpoint]
    code, screen = run_on_terminal(tmp_path, destroy, admin, {"Type the setup id": "nope"})
    assert code == 2 and "not confirmed; nothing was removed" in screen
    assert len(_leftovers(server, setup_id)) == 3
    code, screen = run_on_terminal(tmp_path, destroy, admin, {"Type the setup id": setup_id})
    assert code == 0, screen
    assert _leftovers(server, setup_id) == []


# -- end to end: upload and install with only the created identities -------------------------


def test_upload_and_daemon_install_with_only_the_created_identities(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    done = do_setup(server, admin, tmp_path)
    artifact = tmp_path / "app.tar.gz"
    artifact.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several chunks

    upload = run_cli(tmp_path, "upload", "-c", str(done.upload_config), str(artifact), keys=None)
    assert upload.returncode == 0, upload.stderr
    assert "app.tar.gz\tversion 1" in upload.stdout

    daemon = run_cli(tmp_path, "daemon", "-c", str(done.daemon_config), "--once", keys=None)
    assert daemon.returncode == 0, daemon.stderr
    installed = tmp_path / "installed" / "app.tar.gz"
    assert installed.read_bytes() == artifact.read_bytes()

    # The uploader can see the log but not the artifact's contents.
    listed = run_cli(tmp_path, "list", "-c", str(done.upload_config), keys=None)
    assert listed.returncode == 0 and "app.tar.gz" in listed.stdout
    down = run_cli(
        tmp_path,
        "download",
        "-c",
        str(done.upload_config),
        "app.tar.gz",
        "-o",
        str(tmp_path),
        keys=None,
    )
    assert down.returncode == 4 and "Traceback" not in down.stderr
    assert not (tmp_path / "app.tar.gz.distsync-tmp").exists()

    # A staged rollout halted by the uploader identity (halt records under rollout/), read by
    # the daemon identity: nothing installs until the halt is lifted.
    artifact.write_bytes(os.urandom(1000))
    staged = run_cli(tmp_path, "upload", "-c", str(done.upload_config), str(artifact),
                     "--waves", "1,100%", keys=None)  # fmt: skip
    assert staged.returncode == 0, staged.stderr
    for flag, expect in (("--halt", "halted by "), ("--continue", "lifted the halt")):
        rollout = run_cli(tmp_path, "rollout", "-c", str(done.upload_config), "app.tar.gz",
                          flag, keys=None)  # fmt: skip
        assert rollout.returncode == 0 and expect in rollout.stdout, rollout
        if flag == "--halt":
            held = run_cli(tmp_path, "daemon", "-c", str(done.daemon_config), "--once", keys=None)
            assert held.returncode == 0 and "waits: halted by" in held.stderr, held.stderr
            assert installed.read_bytes() != artifact.read_bytes()
    daemon = run_cli(tmp_path, "daemon", "-c", str(done.daemon_config), "--once", keys=None)
    assert daemon.returncode == 0, daemon.stderr
    assert installed.read_bytes() == artifact.read_bytes()


def test_the_uploader_prunes_with_its_own_identity_and_the_daemon_copes(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    """Issue 17 under IAM enforcement: `upload --keep` and `prune` delete contents as the
    uploader; the log stays (the uploader cannot delete an entry); a daemon pinned to a
    pruned version says so in one line."""
    done = do_setup(server, admin, tmp_path)
    artifact = tmp_path / "pruned-app-5e1.bin"
    for n in range(3):
        artifact.write_bytes(os.urandom(1024 + n))
        upload = run_cli(tmp_path, "upload", "-c", str(done.upload_config), str(artifact),
                         "--keep", "2", keys=None)  # fmt: skip
        assert upload.returncode == 0, upload.stderr
    assert upload.stderr.count("pruned pruned-app-5e1.bin version 1 ") == 1, upload.stderr
    pruned = run_cli(tmp_path, "prune", "-c", str(done.upload_config), "--keep", "1",
                     "--json", keys=None)  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert [row["version"] for row in json.loads(pruned.stdout)["deleted"]] == ["2"]
    listed = run_cli(tmp_path, "list", "-c", str(done.upload_config), "--all", "--json", keys=None)
    assert listed.returncode == 0, listed.stderr
    rows = {row["version"]: row["pruned"] for row in json.loads(listed.stdout)}
    assert rows == {"3": False, "2": True, "1": True}
    s3 = server.client("s3", done.uploader)
    for key in (PREFIX + "log/00000000000000000001", PREFIX + "marker", PREFIX + "store"):
        assert_denied(functools.partial(s3.delete_object, Bucket=done.bucket, Key=key))
    # A content no entry names (a lost claim's): listed with its age and deleted, as the
    # uploader, once old enough.
    orphan = PREFIX + "objects/" + "0" * 32
    s3.put_object(Bucket=done.bucket, Key=orphan, Body=b"lost claim")
    young = run_cli(tmp_path, "prune", "-c", str(done.upload_config), "--orphans", keys=None)
    assert young.returncode == 0 and "left 1 unreferenced" in young.stdout, young.stderr
    swept = run_cli(tmp_path, "prune", "-c", str(done.upload_config), "--orphans",
                    "--orphan-age", "0s", "--json", keys=None)  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert [o["key"] for o in json.loads(swept.stdout)["orphans"]] == [orphan]
    assert [row["version"] for row in json.loads(run_cli(
        tmp_path, "list", "-c", str(done.upload_config), "--json", keys=None).stdout)] == ["3"]
    daemon_config = tomllib.loads(done.daemon_config.read_text())
    daemon_config["Pin"] = {artifact.name: "1"}
    done.daemon_config.write_text(tomli_w.dumps(daemon_config))
    daemon = run_cli(tmp_path, "daemon", "-c", str(done.daemon_config), "--once", keys=None)
    assert daemon.returncode == 1 and "Traceback" not in daemon.stderr
    gone = f"version 1 of {artifact.name} was pruned from the store"
    assert daemon.stderr.count(gone) == 1, daemon.stderr
    assert not (tmp_path / "installed" / artifact.name).exists()


def test_an_uploader_policy_from_before_retention_lists_and_is_told_to_rerun_setup(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    done = do_setup(server, admin, tmp_path)
    artifact = tmp_path / "old-policy-5e1.bin"
    for n in range(2):
        artifact.write_bytes(b"build %d" % n)
        upload = run_cli(tmp_path, "upload", "-c", str(done.upload_config), str(artifact),
                         keys=None)  # fmt: skip
        assert upload.returncode == 0, upload.stderr
    # The uploader's policy as setup wrote it before issue 17: no delete, no listing of
    # objects/.
    old = copy.deepcopy(aws.build_policies(done.bucket)["uploader"])
    writes = next(st for st in old["Statement"] if st["Sid"] == "WriteAndPruneArtifacts")
    writes["Action"].remove("s3:DeleteObject")
    listing = next(st for st in old["Statement"] if st["Action"] == "s3:ListBucket")
    listing["Condition"]["StringLike"]["s3:prefix"] = [PREFIX + "log/*", PREFIX + "status/*"]
    server.client("iam").put_user_policy(
        UserName=aws.user_name(done.setup_id, "uploader"),
        PolicyName="distsync",
        PolicyDocument=json.dumps(old),
    )
    listed = run_cli(tmp_path, "list", "-c", str(done.upload_config), "--json", keys=None)
    assert listed.returncode == 0, listed.stderr
    assert [row["version"] for row in json.loads(listed.stdout)] == ["2", "1"]
    pruned = run_cli(tmp_path, "prune", "-c", str(done.upload_config), "--keep", "1", keys=None)
    assert pruned.returncode == 4 and "Traceback" not in pruned.stderr
    assert "distsync setup` again with the same --setup-id" in pruned.stderr
    again = run_cli(tmp_path, *setup_args(server, done.setup_id, tmp_path), keys=admin)
    assert again.returncode == 0 and "policy updated" in again.stdout, again.stderr
    pruned = run_cli(tmp_path, "prune", "-c", str(done.upload_config), "--keep", "1", keys=None)
    assert pruned.returncode == 0 and "deleted old-policy-5e1.bin version 1 " in pruned.stdout


def test_fleet_status_and_upload_wait_with_only_the_created_identities(
    server: IamServer, admin: Keys, tmp_path: Path
) -> None:
    """Three daemons with the daemon identity write their status records; the uploader
    identity waits on them and reads them; nothing in the bucket names a server or artifact."""
    done = do_setup(server, admin, tmp_path)
    base = tomllib.loads(done.daemon_config.read_text())
    names = ["s3-node-alpha-91", "s3-node-bravo-91", "s3-node-charlie-91"]
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        for name in names:
            config = tmp_path / f"{name}.toml"
            config.write_text(
                tomli_w.dumps(
                    dict(
                        base,
                        NodeName=name,
                        OutputDir=str(tmp_path / name / "out"),
                        StateDir=str(tmp_path / name / "state"),
                        PollInterval=0.5,
                        PollJitter=0,
                        StatusInterval=5,
                    )
                )
            )
            config.chmod(0o600)
            with open(tmp_path / f"{name}.log", "wb") as log:
                daemons.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "distsync", "daemon", "-c", str(config)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=_cli_env(tmp_path),
                    )
                )
        artifact = tmp_path / "s3-fleet-artifact-91.bin"
        artifact.write_bytes(os.urandom(1024 * 1024 + 5))
        upload = run_cli(
            tmp_path, "upload", "-c", str(done.upload_config), str(artifact),
            "--wait", "--servers", "3", "--timeout", "120", keys=None, timeout=180,
        )  # fmt: skip
        logs = "".join((tmp_path / f"{n}.log").read_text() for n in names)
        assert upload.returncode == 0, upload.stderr + logs
        assert "3 of 3 servers installed it" in upload.stdout
        for name in names:
            assert (tmp_path / name / "out" / artifact.name).read_bytes() == artifact.read_bytes()
        shown = run_cli(tmp_path, "status", "-c", str(done.upload_config), "--json", keys=None)
        assert shown.returncode == 0, shown.stderr
        servers = json.loads(shown.stdout)["servers"]
        assert sorted(s["name"] for s in servers) == names
        assert all(s["artifacts"][artifact.name]["version"] == "1" for s in servers)
        assert "cannot write this server's status record" not in logs
    finally:
        for proc in daemons:
            proc.send_signal(signal.SIGTERM)
        for proc in daemons:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # The daemons said they stopped: the records are still there, sealed.
    root = server.client("s3")
    versions = root.list_object_versions(Bucket=done.bucket).get("Versions", [])
    assert sum(v["Key"].startswith(PREFIX + "status/") for v in versions) >= 6
    for v in versions:
        body = root.get_object(Bucket=done.bucket, Key=v["Key"], VersionId=v["VersionId"])
        data = body["Body"].read()
        for text in [*names, artifact.name]:
            assert text not in v["Key"] and text.encode() not in data, v["Key"]
