"""The conditional-create probe against real servers: it tells an atomic create-if-absent
(moto and ministack, like AWS S3) from Swift's (accepted, not atomic) and from Swift's S3 API
(refused)."""

from __future__ import annotations

import os
from pathlib import Path

from distsync.config import AwsCreds, Config, SwiftCreds
from distsync.storage.probe import Verdict, probe_conditional_create
from distsync.storage.s3 import S3Store
from distsync.storage.swift import SwiftStore
from iamserver import ROOT, IamServer
from s3server import ACCESS_KEY, SECRET_KEY, Bucket
from swiftserver import ADMIN, SwiftServer

PREFIX = "distsync/v3/"


def s3_store(endpoint: str, bucket: str, tmp: Path, key: str, secret: str) -> S3Store:
    cfg = Config(
        path=tmp / "distsync.toml",
        secret=os.urandom(32),
        storage_bucket=bucket,
        aws=AwsCreds(access_key=key, secret_key=secret, endpoint=endpoint),
    )
    return S3Store.from_config(cfg, max_attempts=2)


def swift_store(server: SwiftServer, container: str, tmp: Path) -> SwiftStore:
    cfg = Config(
        path=tmp / "distsync.toml",
        secret=os.urandom(32),
        storage_bucket=container,
        storage="Swift",
        swift=SwiftCreds(auth_url=server.auth_url, username=ADMIN.name, api_key=ADMIN.key),
    )
    return SwiftStore.from_config(cfg)


def test_moto_is_atomic(bucket: Bucket, tmp_path: Path) -> None:
    store = s3_store(bucket.endpoint, bucket.name, tmp_path, ACCESS_KEY, SECRET_KEY)
    assert probe_conditional_create(store, PREFIX, rounds=12) is Verdict.ATOMIC


def test_native_swift_is_not_atomic_and_the_probe_cleans_up(
    swift_server: SwiftServer, swift_container: str, tmp_path: Path
) -> None:
    assert swift_server.call("PUT", swift_container)[0] == 201
    store = swift_store(swift_server, swift_container, tmp_path)
    assert probe_conditional_create(store, PREFIX) is Verdict.NOT_ATOMIC
    assert swift_server.listing(swift_container) == []  # SwiftStore.delete removed its keys


def test_swifts_s3_api_has_no_conditional_create(
    swift_server: SwiftServer, swift_container: str, tmp_path: Path
) -> None:
    """Swift 2.30's s3api answers 501 to If-None-Match: a verdict, not a crash."""
    assert swift_server.call("PUT", swift_container)[0] == 201
    store = s3_store(swift_server.endpoint, swift_container, tmp_path, ADMIN.name, ADMIN.key)
    assert probe_conditional_create(store, PREFIX, rounds=3) is Verdict.NO_CONDITIONAL_CREATE


def test_ministack_is_atomic(tmp_path: Path) -> None:
    with IamServer(tmp_path / "ministack") as server:
        server.client("s3").create_bucket(Bucket="probe-bucket")
        store = s3_store(
            server.endpoint, "probe-bucket", tmp_path, ROOT.access_key_id, ROOT.secret_access_key
        )
        assert probe_conditional_create(store, PREFIX, rounds=12) is Verdict.ATOMIC
