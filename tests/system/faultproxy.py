"""A fault-injecting HTTP proxy between the engine and the S3 test server.

It forwards every request to the upstream server unless a ``Fault`` rule matches: then it
answers an error itself (500, 503 SlowDown), resets the connection (before the response or
after part of its body), or stalls (holds the connection silent for longer than the client's
read timeout). Rules fire a given number of times, first match wins; ``counts`` records what
was forwarded and what was done, so a test can prove that its faults really happened, and
``counts["body bytes"]`` how many response body bytes the server sent for the client (all
of them, even if the client hung up before reading them), and ``requests`` every request in
order (what an idle daemon costs is counted there).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Fault", "FaultProxy"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}
_ERROR_CODES = {403: "AccessDenied", 500: "InternalError", 503: "SlowDown"}


@dataclass
class Fault:
    """One rule. ``action``: "status" (answer ``status`` with an S3 error body), "reset"
    or "stall". For reset/stall, ``after`` is how many body bytes go out first (None: nothing,
    not even the status line); ``upstream_first`` lets the request reach the server before
    the answer is lost (a PUT that landed although the client saw it fail)."""

    action: str
    method: str | None = None
    ranged: bool | None = None  # only requests with (True) / without (False) a Range header
    range_from: int | None = None  # only ranged requests starting at or after this byte
    path_contains: str | None = None  # matched against path and query
    times: int = 1
    status: int = 503
    after: int | None = None
    stall: float = 30.0
    upstream_first: bool = False

    def matches(self, method: str, path: str, ranged: bool, start: int | None = None) -> bool:
        return (
            self.times > 0
            and (self.method is None or self.method == method)
            and (self.ranged is None or self.ranged == ranged)
            and (self.range_from is None or (start is not None and start >= self.range_from))
            and (self.path_contains is None or self.path_contains in path + "&")
        )


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []  # (method, path and query), in order
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.counts.clear()
            self.requests.clear()

    def pending(self) -> int:
        """Faults still armed (a test asserts 0 to know every one of them fired)."""
        with self._lock:
            return sum(f.times for f in self.faults)

    def take(
        self, method: str, path: str, ranged: bool, start: int | None = None
    ) -> Fault | None:
        with self._lock:
            self.counts[method] += 1
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.matches(method, path, ranged, start):
                    fault.times -= 1
                    self.counts[fault.action] += 1
                    return fault
            return None

    def sent(self, count: int) -> None:
        with self._lock:
            self.counts["body bytes"] += count

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="faultproxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled handlers
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    owner: FaultProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            pieces = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(pieces)
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        ranged = "Range" in self.headers
        first = self.headers.get("Range", "").removeprefix("bytes=").split("-")[0]
        start = int(first) if first.isdigit() else None
        fault = self.owner.take(self.command, self.path, ranged, start)
        if fault is not None and fault.action == "status":
            self._send_error(fault.status)
            return
        if fault is not None and fault.after is None:
            if fault.upstream_first:
                self._forward(body)
            self._break(fault)  # before any response byte
            return
        status, reason, headers, data = self._forward(body)
        # Counted before the client sees a byte of the answer, so a test that looks right after
        # its request finds it: all the server sent, even if the client hangs up unread.
        self.owner.sent(len(data))
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD" or status in (204, 304):
            return
        if fault is not None and fault.after is not None:
            self.wfile.write(data[: min(fault.after, max(len(data) - 1, 0))])
            self.wfile.flush()
            self._break(fault)
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = self.owner.upstream
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            headers = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
            ]
            if self.command == "HEAD" or response.status in (204, 304):
                length = response.getheader("Content-Length")
                if length is not None:
                    headers.append(("Content-Length", length))
            else:
                headers.append(("Content-Length", str(len(data))))
            return response.status, response.reason, headers, data
        finally:
            conn.close()

    def _send_error(self, status: int) -> None:
        code = _ERROR_CODES.get(status, "InternalError")
        payload = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>injected by the test proxy</Message></Error>"
        ).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _break(self, fault: Fault) -> None:
        self.close_connection = True
        if fault.action == "stall":
            self.owner._stopping.wait(fault.stall)
            return
        # SO_LINGER 0: close() sends a TCP RST, the way a crashed peer or middlebox does.
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
