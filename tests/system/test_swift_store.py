"""The Store contract on Swift against a real Swift (Debian's packages, loopback), and its fault
tolerance through the fault-injecting proxy: no mocks of swiftclient anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from distsync.catalog import Catalog
from distsync.config import Config, SwiftCreds
from distsync.errors import FormatError, NotFoundError, StorageError
from distsync.layout import Layout
from distsync.storage.swift import (
    MAX_SEGMENTS,
    ObjectTooLarge,
    SwiftStore,
    segment_size_for,
)
from distsync.transfer.fetch import fetch_version
from distsync.upload import upload_file
from faultproxy import Fault, FaultProxy
from swiftserver import ADMIN, SwiftServer

KiB = 1 << 10
MiB = 1 << 20
SEGMENT = 1 * MiB  # Swift rate-limits SLO segments under 1 MiB on reads


def make_containers(server: SwiftServer, container: str) -> None:
    for name in (container, container + "_segments", container + "_daemons"):
        status, _, _ = server.call("PUT", name)
        assert status in (201, 202), status


def config_for(auth_url: str, container: str, tmp: Path) -> Config:
    return Config(
        path=tmp / "distsync.toml",
        secret=os.urandom(32),
        storage_bucket=container,
        storage="Swift",
        swift=SwiftCreds(auth_url=auth_url, username=ADMIN.name, api_key=ADMIN.key),
        chunk_size=64 * KiB,
        output_dir=tmp / "out",
    )


def store_for(
    auth_url: str,
    container: str,
    tmp: Path,
    *,
    timeout: float = 10.0,
    retries: int = 3,
    **kw: object,
) -> SwiftStore:
    kw.setdefault("segment_size", SEGMENT)
    kw.setdefault("retry_base_delay", 0.05)
    return SwiftStore.from_config(
        config_for(auth_url, container, tmp),
        timeout=timeout,
        retries=retries,
        backoff=0.05,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def container(swift_server: SwiftServer, swift_container: str) -> str:
    make_containers(swift_server, swift_container)
    return swift_container


@pytest.fixture
def store(swift_server: SwiftServer, container: str, tmp_path: Path) -> SwiftStore:
    return store_for(swift_server.auth_url, container, tmp_path)


def write_in_pieces(store: SwiftStore, key: str, data: bytes, piece: int = 100_003) -> None:
    writer = store.writer(key)
    view = memoryview(data)
    for at in range(0, len(data), piece):
        writer.write(view[at : at + piece])
    writer.commit()


# -- the contract --------------------------------------------------------------------------


def test_create_is_a_conditional_create(store: SwiftStore) -> None:
    assert store.create("log/1", b"first") is True
    assert store.create("log/1", b"second") is False
    assert store.get("log/1") == b"first"


def test_put_get_size_and_ranges(store: SwiftStore) -> None:
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


def test_missing_objects_raise_not_found(store: SwiftStore) -> None:
    for read in (
        lambda: store.get("nope"),
        lambda: store.size("nope"),
        lambda: store.get_range("nope", 0, 1),
    ):
        with pytest.raises(NotFoundError, match="no object nope"):
            read()


def test_small_reads_refuse_oversized_objects(store: SwiftStore) -> None:
    store.put("planted", os.urandom(2000))
    with pytest.raises(ObjectTooLarge, match="planted is 2000 bytes") as caught:
        store.get("planted", limit=1999)
    assert isinstance(caught.value, FormatError) and caught.value.exit_code == 3
    assert len(store.get("planted", limit=2000)) == 2000
    assert len(store.get_range("planted", 0, 2000)) == 2000  # ranged reads are not limited


def test_changed_follows_the_etag(
    store: SwiftStore, swift_server: SwiftServer, container: str
) -> None:
    assert store.changed("marker", None) == ""
    assert store.changed("marker", "") is None
    store.put("marker", b"1")
    tag = store.changed("marker", "")
    assert tag
    assert store.changed("marker", tag) is None  # the server's 304
    assert store.changed("marker", None) == tag
    store.put("marker", b"2")
    newer = store.changed("marker", tag)
    assert newer not in (None, "", tag)
    assert swift_server.call("DELETE", f"{container}/marker")[0] == 204
    assert store.changed("marker", newer) == ""


def test_a_missing_container_is_an_error_not_an_empty_store(
    swift_server: SwiftServer, tmp_path: Path
) -> None:
    store = store_for(swift_server.auth_url, "no-such-container-here", tmp_path)
    with pytest.raises(StorageError, match="container does not exist"):
        store.changed("marker", None)
    with pytest.raises(StorageError, match="container does not exist"):
        list(store.list_after("log/", ""))


def test_list_after_is_ordered_and_pages_with_markers(
    swift_server: SwiftServer, container: str, tmp_path: Path
) -> None:
    store = store_for(swift_server.auth_url, container, tmp_path, list_page=7)
    keys = [f"log/{n:020d}" for n in range(1, 31)]  # past several 7-key pages
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda key: store.put(key, b""), keys))
    store.put("log-other", b"")  # shares the prefix's first letters, not the prefix
    store.put("objects/x", b"")
    assert list(store.list_after("log/", "")) == keys
    assert list(store.list_after("log/", keys[12])) == keys[13:]
    assert list(store.list_after("log/", keys[-1])) == []
    assert list(store.list_after("nothing/", "")) == []


def test_daemon_records_live_in_their_own_container(
    store: SwiftStore, swift_server: SwiftServer, container: str
) -> None:
    store.put("distsync/v3/peers/node-a", b"a")
    store.put("distsync/v3/status/node-a", b"s")
    store.put("distsync/v3/log/00000000000000000001", b"m")
    assert swift_server.listing(container + "_daemons") == [
        "distsync/v3/peers/node-a",
        "distsync/v3/status/node-a",
    ]
    assert swift_server.listing(container) == ["distsync/v3/log/00000000000000000001"]
    assert list(store.list_after("distsync/v3/peers/", "distsync/v3/peers/")) == [
        "distsync/v3/peers/node-a"
    ]
    assert store.get("distsync/v3/status/node-a") == b"s"


# -- the streaming writer: Static Large Objects --------------------------------------------


def segments_of(server: SwiftServer, container: str, key: str) -> list[str]:
    return [name for name in server.listing(container + "_segments") if name.startswith(key)]


def test_writer_makes_a_static_large_object(
    store: SwiftStore, swift_server: SwiftServer, container: str
) -> None:
    data = os.urandom(5 * SEGMENT + 12_345)
    write_in_pieces(store, "big", data)
    assert store.get_range("big", 0, len(data)) == data
    assert store.size("big") == len(data)
    assert store.get_range("big", SEGMENT - 10, 20) == data[SEGMENT - 10 : SEGMENT + 10]
    assert len(segments_of(swift_server, container, "big/")) == 6
    _status, body, headers = swift_server.call("GET", f"{container}/big?multipart-manifest=get")
    assert headers.get("x-static-large-object") == "True"
    assert [item["bytes"] for item in json.loads(body)] == [SEGMENT] * 5 + [12_345]


def test_writer_exact_multiple_and_small_objects(
    store: SwiftStore, swift_server: SwiftServer, container: str
) -> None:
    exact = os.urandom(2 * SEGMENT)
    write_in_pieces(store, "exact", exact)
    assert store.get_range("exact", 0, len(exact)) == exact
    small = os.urandom(1000)
    write_in_pieces(store, "small", small)
    assert store.get("small") == small
    assert segments_of(swift_server, container, "small/") == []  # a plain PUT
    write_in_pieces(store, "empty", b"")
    assert store.get("empty") == b""


def test_nothing_is_visible_before_commit_and_abort_leaves_nothing(
    store: SwiftStore, swift_server: SwiftServer, container: str
) -> None:
    writer = store.writer("aborted")
    writer.write(os.urandom(3 * SEGMENT + 1))
    with pytest.raises(NotFoundError):
        store.size("aborted")
    writer.abort()
    writer.abort()  # idempotent
    assert segments_of(swift_server, container, "aborted/") == []
    with pytest.raises(NotFoundError):
        store.size("aborted")


def test_inventory_tells_sizes_and_ages_page_by_page(
    swift_server: SwiftServer, container: str, tmp_path: Path
) -> None:
    """What ``prune --orphans`` reads: every object under a prefix, its size and age."""
    store = store_for(swift_server.auth_url, container, tmp_path, list_page=3)
    before = time.time()
    keys = [f"objects/{n:04d}" for n in range(8)]  # past several 3-key pages
    for n, key in enumerate(keys):
        store.put(key, b"x" * n)
    store.put("log/00000000000000000001", b"not under the prefix")
    found = list(store.inventory("objects/"))
    assert [(item.key, item.size) for item in found] == [(k, n) for n, k in enumerate(keys)]
    # Swift's clock and ours: the same machine, a listing with sub-second times.
    assert all(before - 5 <= item.modified <= time.time() + 5 for item in found)


def test_delete_removes_an_slo_with_its_segments(
    store: SwiftStore, swift_server: SwiftServer, container: str
) -> None:
    write_in_pieces(store, "gone", os.urandom(2 * SEGMENT + 5))
    store.put("plain", b"x")
    assert segments_of(swift_server, container, "gone/")
    store.delete("gone")
    store.delete("plain")
    store.delete("never-was")
    assert segments_of(swift_server, container, "gone/") == []
    assert swift_server.listing(container) == []


def test_writer_memory_stays_within_its_buffer_budget(
    swift_server: SwiftServer, container: str, tmp_path: Path
) -> None:
    store = store_for(swift_server.auth_url, container, tmp_path, upload_workers=2)
    writer = store.writer("bounded")
    peak = 0
    data = os.urandom(64 * KiB)
    for _ in range(20 * SEGMENT // len(data)):  # 20 segments through a budget of 4 buffers
        writer.write(data)
        peak = max(peak, writer._allocated)
    writer.commit()
    assert peak <= writer._budget(SEGMENT) == 4
    assert store.size("bounded") == 20 * SEGMENT


def test_segment_sizes_grow_so_huge_artifacts_fit_the_manifest_limit() -> None:
    base = 8 * MiB
    assert segment_size_for(1, base) == segment_size_for(200, base) == base
    assert segment_size_for(201, base) == 2 * base
    total = sum(segment_size_for(n, base) for n in range(1, MAX_SEGMENTS + 1))
    assert total > 48 * (1 << 30)
    assert max(segment_size_for(n, base) for n in range(1, MAX_SEGMENTS + 1)) == 128 * MiB


# -- faults: retried where they are passing, clear where they are not ------------------------


@pytest.fixture
def swift_proxy(swift_server: SwiftServer) -> Iterator[FaultProxy]:
    with FaultProxy(swift_server.endpoint) as proxy:
        yield proxy


@pytest.fixture
def proxied(swift_proxy: FaultProxy, container: str, tmp_path: Path) -> SwiftStore:
    return store_for(f"{swift_proxy.endpoint}/auth/v1.0", container, tmp_path, timeout=1.0)


def test_errors_on_puts_are_retried(
    proxied: SwiftStore, swift_proxy: FaultProxy, swift_server: SwiftServer, container: str
) -> None:
    swift_proxy.add(Fault("status", method="PUT", path_contains="_segments/", status=500))
    swift_proxy.add(Fault("status", method="PUT", path_contains="_segments/", times=2))
    swift_proxy.add(Fault("status", method="PUT", path_contains="multipart-manifest", status=500))
    swift_proxy.add(Fault("status", method="PUT", status=503, times=2))
    data = os.urandom(4 * SEGMENT + 1)
    write_in_pieces(proxied, "retried", data)
    assert proxied.create("log/1", b"manifest") is True
    assert swift_proxy.pending() == 0
    assert swift_proxy.counts["status"] == 6
    assert swift_server.call("GET", f"{container}/retried")[1] == data


def test_errors_resets_and_stalls_on_ranged_gets_are_retried(
    proxied: SwiftStore, swift_proxy: FaultProxy, swift_server: SwiftServer, container: str
) -> None:
    data = os.urandom(3 * MiB)
    swift_server.call("PUT", f"{container}/obj", body=data)
    faults = [
        Fault("status", method="GET", ranged=True, status=503),
        Fault("status", method="GET", ranged=True, status=500),
        Fault("reset", method="GET", ranged=True, after=100_000, times=2),
        Fault("stall", method="GET", ranged=True, after=1_000_000, stall=30),
        Fault("stall", method="GET", ranged=True, stall=30),  # before the headers
    ]
    started = time.monotonic()
    for n, fault in enumerate(faults):
        swift_proxy.add(fault)
        start = n * 300_000
        assert proxied.get_range("obj", start, 2 * MiB) == data[start : start + 2 * MiB]
        assert swift_proxy.pending() == 0
    assert time.monotonic() - started < 20  # each stall costs a read timeout, not 30 s
    assert swift_proxy.counts["status"] == 2
    assert (swift_proxy.counts["reset"], swift_proxy.counts["stall"]) == (2, 2)


def test_a_stalled_segment_upload_is_retried(proxied: SwiftStore, swift_proxy: FaultProxy) -> None:
    swift_proxy.add(Fault("stall", method="PUT", path_contains="/00000001", stall=30))
    swift_proxy.add(Fault("reset", method="PUT", path_contains="/00000003"))
    data = os.urandom(3 * SEGMENT)
    write_in_pieces(proxied, "stalled", data)
    assert swift_proxy.pending() == 0
    assert proxied.get_range("stalled", 0, len(data)) == data


def test_a_create_whose_answer_was_lost_is_still_ours(
    proxied: SwiftStore, swift_proxy: FaultProxy
) -> None:
    swift_proxy.add(Fault("reset", method="PUT", upstream_first=True))
    assert proxied.create("log/7", b"sealed manifest") is True  # landed; the retry saw 412
    assert swift_proxy.pending() == 0
    assert proxied.create("log/7", b"another manifest") is False


def test_a_segment_that_keeps_failing_aborts_the_upload(
    swift_proxy: FaultProxy, swift_server: SwiftServer, container: str, tmp_path: Path
) -> None:
    swift_proxy.add(Fault("status", method="PUT", path_contains="/00000002", times=100))
    proxied = store_for(f"{swift_proxy.endpoint}/auth/v1.0", container, tmp_path, retries=1)
    writer = proxied.writer("doomed")
    with pytest.raises(StorageError, match=r"cannot upload doomed: HTTP 503"):
        for _ in range(8):
            writer.write(os.urandom(SEGMENT))
        writer.commit()
    assert segments_of(swift_server, container, "doomed/") == []
    with pytest.raises(NotFoundError):
        proxied.size("doomed")


def test_access_denied_names_the_action_and_key_and_no_secret(
    proxied: SwiftStore, swift_proxy: FaultProxy
) -> None:
    swift_proxy.add(Fault("status", method="GET", status=403, path_contains="/log/"))
    with pytest.raises(StorageError) as caught:
        proxied.get("distsync/v3/log/00000000000000000001")
    message = str(caught.value)
    assert "access denied: cannot read distsync/v3/log/00000000000000000001" in message
    assert ADMIN.key not in message and "AUTH_tk" not in message


def test_wrong_credentials_are_one_clear_line(
    swift_server: SwiftServer, container: str, tmp_path: Path
) -> None:
    cfg = config_for(swift_server.auth_url, container, tmp_path)
    wrong = SwiftCreds(auth_url=swift_server.auth_url, username=ADMIN.name, api_key="nope")
    store = SwiftStore.from_config(
        Config(**{**cfg.__dict__, "swift": wrong}), retries=1, backoff=0.05
    )
    with pytest.raises(StorageError, match="refused the credentials") as caught:
        store.changed("marker", None)
    assert "nope" not in str(caught.value)


def test_a_store_that_is_down_fails_clearly_and_in_bounded_time(
    container: str, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        auth = f"http://127.0.0.1:{sock.getsockname()[1]}/auth/v1.0"
        store = store_for(auth, container, tmp_path, retries=1)
        started = time.monotonic()
        with pytest.raises(StorageError, match="endpoint is unreachable") as caught:
            store.changed("distsync/v3/marker", None)
    assert time.monotonic() - started < 10
    assert ADMIN.key not in str(caught.value) and "\n" not in str(caught.value)


def test_a_store_that_never_answers_fails_in_bounded_time(
    swift_proxy: FaultProxy, container: str, tmp_path: Path
) -> None:
    swift_proxy.add(Fault("stall", stall=60, times=100))
    store = store_for(
        f"{swift_proxy.endpoint}/auth/v1.0", container, tmp_path, timeout=0.5, retries=1
    )
    started = time.monotonic()
    with pytest.raises(StorageError, match="stopped answering"):
        store.get("distsync/v3/marker")
    assert time.monotonic() - started < 10


def test_upload_and_fetch_through_a_faulty_network(
    swift_proxy: FaultProxy, container: str, tmp_path: Path
) -> None:
    """The engine's own upload and download over the proxy: complete and byte-identical."""
    auth = f"{swift_proxy.endpoint}/auth/v1.0"
    cfg = config_for(auth, container, tmp_path)
    store = store_for(auth, container, tmp_path, timeout=1.0)
    catalog = Catalog(store, Layout(cfg.prefix), cfg.secret)
    source = tmp_path / "app.tar.gz"
    source.write_bytes(os.urandom(3 * MiB + 777))
    for fault in (
        Fault("status", method="PUT", path_contains="/00000002", status=500),
        Fault("status", method="PUT", path_contains="_segments/", times=2),
        Fault("reset", method="PUT", path_contains="/00000003"),
        Fault("status", method="GET", ranged=True),
        Fault("reset", method="GET", ranged=True, after=50_000, times=2),
        Fault("stall", method="GET", ranged=True, after=200_000, stall=30),
    ):
        swift_proxy.add(fault)
    version = upload_file(cfg, store, catalog, source)
    dest = tmp_path / "out" / "app.tar.gz"
    dest.parent.mkdir()
    result = fetch_version(store, cfg.secret, catalog.newest("app.tar.gz"), dest)
    assert swift_proxy.pending() == 0
    assert result.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert dest.read_bytes() == source.read_bytes()
    assert version.manifest.object_key.startswith(cfg.prefix + "objects/")
