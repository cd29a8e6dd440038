"""A small fault-injecting HTTP proxy for storage tests, on 127.0.0.1.

It forwards every request to one upstream server (the S3 or WebDAV server under test), streaming
bodies both ways, and keeps a log of what passed. Faults are rules: the N-th request matching a
method and a substring of the path/query fails with a chosen status and S3 error code, has its
connection closed before or after the upstream saw it, is held until an event is set, has a
byte of its body flipped, or has its response's ETag changed. ``latency`` adds a delay to every
request, as the round trip to a real cloud store does.

Request signatures (SigV4) stay valid: the ``Host`` header and every signed header are passed on
unchanged.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Action = Literal["status", "close", "close_after_forward", "hold", "corrupt", "etag"]

# Headers that belong to one connection, not to the request.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
}


@dataclass
class Fault:
    """Fails requests ``nth .. nth + times - 1`` (1-based) among those that match, counted
    from when the fault was added.

    ``method``: the HTTP method (None: any). ``contains``: a substring of the request target
    (path and query), e.g. ``"partNumber="`` for S3 UploadPart or ``"uploads"``. ``every``:
    if set, fail every ``every``-th matching request instead (chaos mode).
    """

    action: Action = "status"
    method: str | None = None
    contains: str = ""
    nth: int = 1
    times: int = 1
    every: int = 0
    status: int = 503
    code: str = "SlowDown"
    release: threading.Event = field(default_factory=threading.Event)  # for "hold"
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method == method) and self.contains in target


@dataclass(frozen=True)
class Record:
    method: str
    target: str
    status: int  # 0: no response (connection closed)
    fault: str  # the action injected, "" if none
    # For UploadPart: the part number, else 0.
    part: int = 0


class FaultProxy:
    """``with FaultProxy("http://127.0.0.1:PORT") as proxy: ... proxy.url ...``"""

    def __init__(self, upstream: str, *, latency: float = 0.0) -> None:
        u = urlsplit(upstream)
        self.latency = latency
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the proxy forwards to loopback servers only")
        self.upstream_host = u.hostname
        self.upstream_port = u.port or 80
        self.faults: list[Fault] = []
        self.log: list[Record] = []
        self.in_flight = 0
        self.max_in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.02,), name="fault-proxy"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        for f in self.faults:
            f.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Faults and the log.

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            for f in self.faults:
                f.release.set()
            self.faults.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def records(self, method: str | None = None, contains: str = "") -> list[Record]:
        with self._lock:
            return [
                r
                for r in self.log
                if (method is None or r.method == method) and contains in r.target
            ]

    def parts_stored(self) -> list[int]:
        """Part numbers of the UploadPart requests the server answered with 200, in order."""
        return [r.part for r in self.records("PUT", "partNumber=") if r.status == 200]

    def _fault_for(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.matches(method, target):
                    f.seen += 1
                    if (f.every and f.seen % f.every == 0) or (
                        not f.every and f.nth <= f.seen < f.nth + f.times
                    ):
                        f.fired += 1
                        return f
            return None

    def _record(self, r: Record) -> None:
        with self._lock:
            self.log.append(r)

    def _enter(self, kind: str) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight[kind] = max(self.max_in_flight.get(kind, 0), self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _part_number(target: str) -> int:
    for item in urlsplit(target).query.split("&"):
        k, _, v = item.partition("=")
        if k == "partNumber" and v.isdigit():
            return int(v)
    return 0


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET
    do_PROPFIND = do_MKCOL = do_MOVE = do_COPY = do_OPTIONS = do_GET

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body, streamed; ends early if the client went away."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                data = self.rfile.read(n)
                self.rfile.readline()
                yield data
                if len(data) < n:
                    return
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    return
                left -= len(data)
                yield data

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _proxy(self) -> None:
        owner = self.owner
        method, target = self.command, self.path
        part = _part_number(target) if method == "PUT" else 0
        fault = owner._fault_for(method, target)
        action = fault.action if fault is not None else ""
        owner._enter(method)
        try:
            if owner.latency:
                time.sleep(owner.latency)
            body: list[bytes] | None = None
            if fault is not None and action == "hold":
                fault.release.wait(60)
                # Whole body first: a client killed while held must not get a torn request
                # through to the server.
                body = list(self._body_chunks())
                if sum(map(len, body)) < int(self.headers.get("Content-Length") or 0):
                    owner._record(Record(method, target, 0, "client-gone", part))
                    self._drop()
                    return
            if action == "close":
                owner._record(Record(method, target, 0, action, part))
                self._drop()
                return
            if fault is not None and action == "status":
                for _ in self._body_chunks():
                    pass
                error = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
                    f"<Message>injected by the fault proxy</Message></Error>"
                ).encode()
                self.send_response_only(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(error)
                owner._record(Record(method, target, fault.status, action, part))
                return
            self._forward(method, target, part, fault, body)
        finally:
            owner._leave()

    def _forward(
        self, method: str, target: str, part: int, fault: Fault | None, buffered: list[bytes] | None
    ) -> None:
        owner = self.owner
        action = fault.action if fault is not None else ""
        conn = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=120)
        try:
            chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in _HOP:
                    conn.putheader(k, v)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            expected = int(self.headers.get("Content-Length") or 0)
            sent = 0
            first = True
            for chunk in self._body_chunks() if buffered is None else buffered:
                if action == "corrupt" and first and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                first = False
                sent += len(chunk)
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if not chunked and sent < expected:
                # The client went away mid-body: do not let the upstream store a torn body.
                owner._record(Record(method, target, 0, "client-gone", part))
                return
            if chunked:
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            if action == "close_after_forward":
                resp.read()
                owner._record(Record(method, target, 0, action, part))
                self._drop()
                return
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            length = resp.getheader("Content-Length")
            body: bytes | None = None
            if length is None and method != "HEAD" and resp.status not in (204, 304):
                body = resp.read()
                headers.append(("Content-Length", str(len(body))))
            if action == "etag":
                headers = [
                    (k, '"00000000000000000000000000000000"' if k.lower() == "etag" else v)
                    for k, v in headers
                ]
            self.send_response_only(resp.status, resp.reason)
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if body is not None:
                self.wfile.write(body)
            elif method != "HEAD":
                while block := resp.read(1 << 20):
                    self.wfile.write(block)
            owner._record(Record(method, target, resp.status, action, part))
        except (OSError, http.client.HTTPException):
            owner._record(Record(method, target, 0, "upstream-error", part))
            self._drop()
        finally:
            conn.close()
