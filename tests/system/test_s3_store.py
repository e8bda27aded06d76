"""The Store contract on S3 against a real S3 server (moto, server mode), and its fault
tolerance through a fault-injecting proxy: no mocks of boto3 anywhere."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from distsync.catalog import Catalog
from distsync.config import AwsCreds, Config
from distsync.errors import NotFoundError, StorageError
from distsync.layout import Layout
from distsync.storage.s3 import MAX_PARTS, S3Store, part_size_for
from distsync.transfer.fetch import fetch_version
from distsync.upload import upload_file
from faultproxy import Fault, FaultProxy
from s3server import ACCESS_KEY, SECRET_KEY, Bucket

KiB = 1 << 10
MiB = 1 << 20
PART = 256 * KiB  # the test server accepts parts this small; real S3 wants >= 5 MiB


def config_for(endpoint: str, bucket: str, tmp: Path) -> Config:
    return Config(
        path=tmp / "distsync.toml",
        secret=os.urandom(32),
        storage_bucket=bucket,
        storage="S3",
        aws=AwsCreds(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint=endpoint),
        chunk_size=64 * KiB,
        output_dir=tmp / "out",
    )


def store_for(
    endpoint: str,
    bucket: str,
    tmp: Path,
    *,
    read_timeout: float = 10.0,
    attempts: int = 4,
    **kwargs: object,
) -> S3Store:
    kwargs.setdefault("part_size", PART)
    kwargs.setdefault("retry_base_delay", 0.05)
    return S3Store.from_config(
        config_for(endpoint, bucket, tmp),
        connect_timeout=2,
        read_timeout=read_timeout,
        max_attempts=attempts,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(bucket: Bucket, tmp_path: Path) -> S3Store:
    return store_for(bucket.endpoint, bucket.name, tmp_path)


def write_in_pieces(store: S3Store, key: str, data: bytes, piece: int = 100_003) -> None:
    writer = store.writer(key)
    view = memoryview(data)
    for at in range(0, len(data), piece):
        writer.write(view[at : at + piece])
    writer.commit()


def pending_uploads(bucket: Bucket) -> list[object]:
    return list(bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", []))


def part_count(bucket: Bucket, key: str) -> int:
    etag = bucket.client.head_object(Bucket=bucket.name, Key=key)["ETag"].strip('"')
    return int(etag.split("-")[1]) if "-" in etag else 1


# -- the contract --------------------------------------------------------------------------


def test_create_is_a_conditional_create(store: S3Store) -> None:
    assert store.create("log/1", b"first") is True
    assert store.create("log/1", b"second") is False
    assert store.get("log/1") == b"first"


def test_put_get_size_and_ranges(store: S3Store) -> None:
    data = os.urandom(100_000)
    store.put("obj", data)
    store.put("obj", data[::-1])  # put replaces
    data = data[::-1]
    assert store.get("obj") == data
    assert store.size("obj") == len(data)
    assert store.get_range("obj", 0, 10) == data[:10]
    assert store.get_range("obj", 12_345, 50_000) == data[12_345:62_345]
    assert store.get_range("obj", 99_990, 100) == data[99_990:]  # short only at the end
    assert store.get_range("obj", 100_000, 10) == b""
    assert store.get_range("obj", 5, 0) == b""


def test_missing_objects_raise_not_found(store: S3Store) -> None:
    for read in (
        lambda: store.get("nope"),
        lambda: store.size("nope"),
        lambda: store.get_range("nope", 0, 1),
    ):
        with pytest.raises(NotFoundError, match="no object nope"):
            read()


def test_changed_follows_the_etag(store: S3Store, bucket: Bucket) -> None:
    assert store.changed("marker", None) == ""
    assert store.changed("marker", "") is None
    store.put("marker", b"1")
    tag = store.changed("marker", "")
    assert tag and tag.startswith('"')
    assert store.changed("marker", tag) is None
    assert store.changed("marker", None) == tag
    store.put("marker", b"2")
    newer = store.changed("marker", tag)
    assert newer not in (None, "", tag)
    bucket.client.delete_object(Bucket=bucket.name, Key="marker")
    assert store.changed("marker", newer) == ""


def test_a_missing_bucket_is_an_error_not_an_empty_store(bucket: Bucket, tmp_path: Path) -> None:
    store = store_for(bucket.endpoint, "no-such-bucket-here", tmp_path)
    with pytest.raises(StorageError, match="bucket does not exist"):
        store.changed("marker", None)
    with pytest.raises(StorageError, match="bucket does not exist"):
        list(store.list_after("log/", ""))


def test_list_after_is_ordered_and_paginates(store: S3Store, bucket: Bucket) -> None:
    keys = [f"log/{n:020d}" for n in range(1, 1011)]  # past S3's 1000-key page
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda key: store.put(key, b""), keys))
    store.put("log-other", b"")  # shares the prefix's first letters, not the prefix
    store.put("objects/x", b"")
    assert list(store.list_after("log/", "")) == keys
    assert list(store.list_after("log/", keys[998])) == keys[999:]
    assert list(store.list_after("log/", keys[-1])) == []
    assert list(store.list_after("nothing/", "")) == []


# -- the streaming writer ------------------------------------------------------------------


def test_writer_uploads_in_parts(store: S3Store, bucket: Bucket) -> None:
    data = os.urandom(5 * PART + 12_345)
    write_in_pieces(store, "big", data)
    assert store.get("big", limit=len(data)) == data
    assert part_count(bucket, "big") == 6
    assert pending_uploads(bucket) == []


def test_writer_exact_multiple_and_small_objects(store: S3Store, bucket: Bucket) -> None:
    exact = os.urandom(2 * PART)
    write_in_pieces(store, "exact", exact)
    assert store.get("exact") == exact
    small = os.urandom(1000)
    write_in_pieces(store, "small", small)
    assert store.get("small") == small and part_count(bucket, "small") == 1
    write_in_pieces(store, "empty", b"")
    assert store.get("empty") == b""


def test_nothing_is_visible_before_commit_and_abort_leaves_nothing(
    store: S3Store, bucket: Bucket
) -> None:
    writer = store.writer("aborted")
    writer.write(os.urandom(3 * PART + 1))
    assert pending_uploads(bucket)  # parts are in the bucket, the object is not
    with pytest.raises(NotFoundError):
        store.size("aborted")
    writer.abort()
    writer.abort()  # idempotent
    assert pending_uploads(bucket) == []
    with pytest.raises(NotFoundError):
        store.size("aborted")


def test_writer_memory_stays_within_its_buffer_budget(bucket: Bucket, tmp_path: Path) -> None:
    store = store_for(bucket.endpoint, bucket.name, tmp_path, upload_workers=2)
    writer = store.writer("bounded")
    peak = 0
    data = os.urandom(64 * KiB)
    for _ in range(40 * PART // len(data)):  # 40 parts through a budget of 4 buffers
        writer.write(data)
        peak = max(peak, writer._allocated)
    writer.commit()
    assert peak <= writer._budget(PART) == 4
    assert store.size("bounded") == 40 * PART


def test_part_sizes_grow_so_huge_artifacts_fit() -> None:
    base = 8 * MiB
    assert part_size_for(1, base) == part_size_for(2000, base) == base
    assert part_size_for(2001, base) == 2 * base
    total = sum(part_size_for(n, base) for n in range(1, MAX_PARTS + 1))
    assert total > 400 * (1 << 30)  # far past S3's 5 GiB single-PUT limit
    reach = 0
    for n in range(1, MAX_PARTS + 1):
        if part_size_for(n, base) == 64 * MiB:
            break
        reach += part_size_for(n, base)
    assert reach > 80 * (1 << 30)  # 8..32 MiB parts up to past 80 GiB
    assert max(part_size_for(n, base) for n in range(1, MAX_PARTS + 1)) == 128 * MiB


# -- faults: retried where they are passing, clear where they are not -------------------------


@pytest.fixture
def proxied(fault_proxy: FaultProxy, bucket: Bucket, tmp_path: Path) -> S3Store:
    return store_for(fault_proxy.endpoint, bucket.name, tmp_path, read_timeout=1.0)


def test_errors_and_slowdown_on_puts_are_retried(
    proxied: S3Store, fault_proxy: FaultProxy, bucket: Bucket
) -> None:
    fault_proxy.add(Fault("status", method="PUT", path_contains="partNumber=2", status=500))
    fault_proxy.add(Fault("status", method="PUT", path_contains="partNumber", times=2))
    fault_proxy.add(Fault("status", method="POST", path_contains="uploadId", status=500))
    fault_proxy.add(Fault("status", method="PUT", status=503, times=2))
    data = os.urandom(4 * PART + 1)
    write_in_pieces(proxied, "retried", data)
    assert proxied.create("log/1", b"manifest") is True
    assert fault_proxy.pending() == 0
    assert fault_proxy.counts["status"] == 6
    assert bucket.client.get_object(Bucket=bucket.name, Key="retried")["Body"].read() == data
    assert pending_uploads(bucket) == []


def test_errors_resets_and_stalls_on_ranged_gets_are_retried(
    proxied: S3Store, fault_proxy: FaultProxy, bucket: Bucket
) -> None:
    data = os.urandom(3 * MiB)
    bucket.client.put_object(Bucket=bucket.name, Key="obj", Body=data)
    # One fault per read: each costs a single retry (botocore's backoff doubles per attempt).
    faults = [
        Fault("status", method="GET", ranged=True, status=503),
        Fault("status", method="GET", ranged=True, status=500),
        Fault("reset", method="GET", ranged=True, after=100_000, times=2),
        Fault("stall", method="GET", ranged=True, after=1_000_000, stall=30),
        Fault("stall", method="GET", ranged=True, stall=30),  # before the headers
    ]
    started = time.monotonic()
    for n, fault in enumerate(faults):
        fault_proxy.add(fault)
        start = n * 300_000
        assert proxied.get_range("obj", start, 2 * MiB) == data[start : start + 2 * MiB]
        assert fault_proxy.pending() == 0
    assert time.monotonic() - started < 20  # each stall costs a read timeout, not 30 s
    assert fault_proxy.counts["status"] == 2
    assert (fault_proxy.counts["reset"], fault_proxy.counts["stall"]) == (2, 2)


def test_a_stalled_part_upload_is_retried(
    proxied: S3Store, fault_proxy: FaultProxy, bucket: Bucket
) -> None:
    fault_proxy.add(Fault("stall", method="PUT", path_contains="partNumber=1&", stall=30))
    fault_proxy.add(Fault("reset", method="PUT", path_contains="partNumber=3&"))
    data = os.urandom(3 * PART)
    write_in_pieces(proxied, "stalled", data)
    assert fault_proxy.pending() == 0
    assert proxied.get("stalled") == data


def test_a_create_whose_answer_was_lost_is_still_ours(
    proxied: S3Store, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add(Fault("reset", method="PUT", upstream_first=True))
    assert proxied.create("log/7", b"sealed manifest") is True  # landed; the retry saw 412
    assert fault_proxy.pending() == 0
    assert proxied.create("log/7", b"another manifest") is False


def test_a_part_that_keeps_failing_aborts_the_upload(
    fault_proxy: FaultProxy, bucket: Bucket, tmp_path: Path
) -> None:
    fault_proxy.add(Fault("status", method="PUT", path_contains="partNumber=2&", times=100))
    proxied = store_for(fault_proxy.endpoint, bucket.name, tmp_path, attempts=2)
    writer = proxied.writer("doomed")
    with pytest.raises(StorageError, match=r"cannot upload doomed: SlowDown \(HTTP 503\)"):
        for _ in range(20):
            writer.write(os.urandom(PART))
        writer.commit()
    assert pending_uploads(bucket) == []
    with pytest.raises(NotFoundError):
        proxied.size("doomed")


def test_access_denied_names_the_action_and_key_and_no_secret(
    proxied: S3Store, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add(Fault("status", method="GET", status=403))
    with pytest.raises(StorageError) as caught:
        proxied.get("distsync/v3/log/00000000000000000001")
    message = str(caught.value)
    assert "access denied: cannot read distsync/v3/log/00000000000000000001" in message
    assert SECRET_KEY not in message and ACCESS_KEY not in message


def test_a_store_that_is_down_fails_clearly_and_in_bounded_time(
    bucket: Bucket, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        store = store_for(endpoint, bucket.name, tmp_path, attempts=2)
        started = time.monotonic()
        with pytest.raises(StorageError, match="endpoint is unreachable") as caught:
            store.changed("distsync/v3/marker", None)
    assert time.monotonic() - started < 10
    assert SECRET_KEY not in str(caught.value) and "\n" not in str(caught.value)


def test_a_store_that_never_answers_fails_in_bounded_time(
    fault_proxy: FaultProxy, bucket: Bucket, tmp_path: Path
) -> None:
    fault_proxy.add(Fault("stall", stall=60, times=100))
    store = store_for(fault_proxy.endpoint, bucket.name, tmp_path, read_timeout=0.5, attempts=2)
    started = time.monotonic()
    with pytest.raises(StorageError, match="stopped answering"):
        store.get("distsync/v3/marker")
    assert time.monotonic() - started < 10


def test_upload_and_fetch_through_a_faulty_network(
    fault_proxy: FaultProxy, bucket: Bucket, tmp_path: Path
) -> None:
    """The engine's own upload and download over the proxy: complete and byte-identical."""
    cfg = config_for(fault_proxy.endpoint, bucket.name, tmp_path)
    store = store_for(fault_proxy.endpoint, bucket.name, tmp_path, read_timeout=1.0)
    catalog = Catalog(store, Layout(cfg.prefix), cfg.secret, trust=cfg.trust)
    source = tmp_path / "app.tar.gz"
    source.write_bytes(os.urandom(3 * MiB + 777))
    for fault in (
        Fault("status", method="PUT", path_contains="partNumber=3&", status=500),
        Fault("status", method="PUT", path_contains="partNumber", times=2),
        Fault("reset", method="PUT", path_contains="partNumber=5&"),
        Fault("status", method="GET", ranged=True),
        Fault("reset", method="GET", ranged=True, after=50_000, times=2),
        Fault("stall", method="GET", ranged=True, after=200_000, stall=30),
    ):
        fault_proxy.add(fault)
    version = upload_file(cfg, store, catalog, source)
    dest = tmp_path / "out" / "app.tar.gz"
    dest.parent.mkdir()
    result = fetch_version(store, cfg.secret, catalog.newest("app.tar.gz"), dest)
    assert fault_proxy.pending() == 0
    assert result.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert dest.read_bytes() == source.read_bytes()
    assert version.manifest.object_key.startswith(cfg.prefix + "objects/")
