"""Prometheus metrics of the daemon (prometheus-client), served over HTTP and/or written as a
node_exporter textfile.

``MetricsAddress = "127.0.0.1:9717"`` serves ``/metrics``; ``MetricsTextfile`` is rewritten
atomically (temp file, rename) after every cycle for node_exporter's textfile collector.
Each daemon has a registry of its own, so nothing of the library's process-wide defaults
leaks in. docs/status.md lists every metric.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from distsync import __version__
from distsync.errors import LocalIOError
from distsync.fsutil import local_io_error
from distsync.storage.counting import CountingStore

__all__ = ["DaemonMetrics"]

log = logging.getLogger(__name__)

_POLL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class _StoreCollector(Collector):
    """Requests and bytes read, straight from the daemon's CountingStore at scrape time."""

    def __init__(self, store: CountingStore) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "distsync_store_requests",
            "Requests to the store by operation (a listing counts once however many pages)",
            labels=["operation"],
        )
        for operation, count in sorted(self.store.requests.items()):
            requests.add_metric([operation], count)
        yield requests


class DaemonMetrics:
    def __init__(self, store: CountingStore) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StoreCollector(store))
        reg = self.registry
        self.build = Info("distsync_build", "The daemon's build", registry=reg)
        self.build.info({"version": __version__, "python": platform.python_version()})
        self.installs = Counter(
            "distsync_installs", "Artifact versions installed", ["name"], registry=reg
        )
        self.failures = Counter(
            "distsync_install_failures",
            "Failed installs (rejected or to be retried)",
            ["name"],
            registry=reg,
        )
        self.hook_failures = Counter(
            "distsync_hook_failures", "OnUpdate hooks that failed", ["name"], registry=reg
        )
        self.fetched = Counter(
            "distsync_fetched_bytes",
            "Bytes read from the store itself, or received from peers (S3+BitTorrent)",
            ["source"],
            registry=reg,
        )
        self.poll_seconds = Histogram(
            "distsync_poll_duration_seconds",
            "Duration of one poll cycle, installs included",
            buckets=_POLL_BUCKETS,
            registry=reg,
        )
        self.poll_errors = Counter(
            "distsync_poll_errors", "Polls that could not reach or list the store", registry=reg
        )
        self.last_poll = Gauge(
            "distsync_last_successful_poll_timestamp_seconds",
            "When the store was last polled successfully",
            registry=reg,
        )
        self.last_install = Gauge(
            "distsync_last_install_timestamp_seconds",
            "When each name was last installed",
            ["name"],
            registry=reg,
        )
        self.installed = Info(
            "distsync_installed", "The version installed of each name", ["name"], registry=reg
        )
        self.status_writes = Counter(
            "distsync_status_writes", "Status records written", ["result"], registry=reg
        )
        for source in ("store", "peers"):
            self.fetched.labels(source)
        for result in ("ok", "error"):
            self.status_writes.labels(result)
        self._store = store
        self._store_bytes = 0
        self._server: Any = None

    def sync_store_bytes(self) -> None:
        """Move the CountingStore's byte count into the counter."""
        now = self._store.bytes_read
        if now > self._store_bytes:
            self.fetched.labels("store").inc(now - self._store_bytes)
            self._store_bytes = now

    def serve(self, address: tuple[str, int]) -> int:
        """Serve /metrics on ``address``; returns the port (``0`` asks for a free one)."""
        host, port = address
        try:
            self._server, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise LocalIOError(
                f"cannot serve metrics on {host}:{port}: {(exc.strerror or str(exc)).lower()}"
            ) from None
        bound = int(self._server.server_address[1])
        log.info("serving metrics on http://%s:%d/metrics", _bracket(host), bound)
        return bound

    def write_textfile(self, path: Path) -> None:
        try:
            write_to_textfile(str(path), self.registry)
        except OSError as exc:
            raise local_io_error("write", path, exc) from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
