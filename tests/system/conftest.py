"""Fixtures for system tests against a real S3 HTTP server (moto in server mode)."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/system is on sys.path (pytest's default "prepend" import mode, no __init__.py).
from faultproxy import FaultProxy
from s3server import Bucket, MotoServer
from swiftserver import SwiftServer


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the whole session; tests isolate themselves by bucket."""
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def bucket(moto_server: MotoServer) -> Iterator[Bucket]:
    if not moto_server.alive():
        moto_server.start()  # a test that stopped the shared server must not break the next
    name = f"t-{uuid.uuid4().hex[:20]}"
    client = moto_server.client()
    client.create_bucket(Bucket=name)
    yield Bucket(moto_server.endpoint, name, client)
    # Objects live in moto's memory: drop them so a long session stays small.
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=name)
    for page in pages:
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys})


@pytest.fixture
def private_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A server of the test's own, which it may stop and restart on the same port."""
    with MotoServer(tmp_path / "moto") as server:
        yield server


@pytest.fixture
def fault_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftServer]:
    """One real Swift (Debian's packages) for the whole session; tests isolate by container.

    Installed first when missing and the session is root (CI); otherwise this fails, never
    skips."""
    with SwiftServer(tmp_path_factory.mktemp("swift")) as server:
        yield server


@pytest.fixture
def swift_container(swift_server: SwiftServer) -> Iterator[str]:
    """A fresh container name (the engine or setup creates the container)."""
    if not swift_server.alive():
        swift_server.start()  # a test that stopped the shared server must not break the next
    yield f"t-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a hanging store or peer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()
