"""A fault-injecting HTTP reverse proxy on loopback, for the S3 test server.

Why a proxy and not a mock: the point is to check that the *real* clients (boto3 with its
retry mode, pyarrow's AWS SDK with its retry strategy) and our code on top of them survive
the faults an object store really has. So the bytes go over real sockets to the real moto
server, and the proxy only decides, per request, whether to forward it or to fail it:

- ``500`` (S3 ``InternalError``) or ``503`` (S3 ``SlowDown``) with an S3-style XML body, or
- ``reset``: the TCP connection is aborted with an RST (``SO_LINGER`` 0) instead of a reply.

By default a faulted request never reaches the server (as when a load balancer fails). With
``after=True`` the request *is* applied upstream and only the reply is lost, the case that
tests whether a retried write is idempotent.

Faults hit a seeded random fraction ``rate`` of the requests that ``match(method, path)``
accepts; everything else is forwarded untouched. Counters say what happened, so a test can
assert that faults were really injected.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}

_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{msg}</Message>'
    "<RequestId>fault-proxy</RequestId></Error>"
)
_FAULT_REPLIES = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
}


def matcher(methods: Iterable[str] | None = None, path: str | None = None) -> Callable[[str, str], bool]:
    """A filter: requests whose method is in ``methods`` (any when None) and whose path matches ``path``."""
    ms = {m.upper() for m in methods} if methods else None
    rx = re.compile(path) if path else None
    return lambda method, p: (ms is None or method.upper() in ms) and (rx is None or rx.search(p) is not None)


class FaultProxy:
    """Forward to ``upstream`` (``http://host:port``), failing a seeded fraction of matching requests."""

    def __init__(
        self,
        upstream: str,
        rate: float = 0.0,
        seed: int = 0,
        faults: Iterable[str] = ("500", "503", "reset"),
        match: Callable[[str, str], bool] | None = None,
        after: bool = False,
        record: bytes | None = None,
        limit: int | None = None,
    ):
        u = urlparse(upstream)
        self.upstream_host, self.upstream_port = u.hostname, u.port or 80
        self.rate, self.faults, self.after = rate, tuple(faults), after
        self.limit = limit  # inject at most this many faults (then forward everything)
        self.match = match or matcher()
        self.record = record  # a marker to look for in every raw request (credentials must never appear)
        self.marker_seen = 0
        self.counts: Counter = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- configuration, thread-safe
    def configure(self, rate: float | None = None, faults: Iterable[str] | None = None,
                  match: Callable[[str, str], bool] | None = None, after: bool | None = None,
                  limit: int | None = -1) -> None:
        """Change settings; ``limit`` None means unlimited, -1 (default) keeps it; counters start again."""
        with self._lock:
            self.counts.clear()
            if limit != -1:
                self.limit = limit
            if rate is not None:
                self.rate = rate
            if faults is not None:
                self.faults = tuple(faults)
            if match is not None:
                self.match = match
            if after is not None:
                self.after = after

    def _decide(self, method: str, path: str) -> str | None:
        with self._lock:
            self.counts["requests"] += 1
            if not self.match(method, path) or self.rate <= 0:
                return None
            if self.limit is not None and self.counts["faults"] >= self.limit:
                return None
            self.counts["matched"] += 1
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.faults)
            self.counts[f"fault_{kind}"] += 1
            self.counts["faults"] += 1
            return kind

    @property
    def faults_injected(self) -> int:
        return self.counts["faults"]

    # -- lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # resets are the point; stay quiet
        pass


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3 and the AWS SDK expect

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        o = self.owner
        conn = http.client.HTTPConnection(o.upstream_host, o.upstream_port, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    conn.putheader(k, v)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, list(resp.getheaders()), data
        finally:
            conn.close()

    def _handle(self) -> None:
        o = self.owner
        body = self._body()
        if o.record and (o.record in body or any(o.record.decode() in v for v in self.headers.values())):
            with o._lock:
                o.marker_seen += 1
        fault = o._decide(self.command, self.path)
        if fault is not None and not o.after:
            if fault == "reset":
                self._reset()
                return
            self._reply_error(fault)
            return
        status, reason, headers, data = self._forward(body)
        if fault is not None:  # after=True: the server applied the request; the reply is lost
            if fault == "reset":
                self._reset()
            else:
                self._reply_error(fault)
            return
        self.send_response_only(status, reason)
        for k, v in headers:
            if k.lower() in HOP_BY_HOP or (k.lower() == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def _reply_error(self, fault: str) -> None:
        status, code, msg = _FAULT_REPLIES[fault]
        data = b"" if self.command == "HEAD" else _ERROR_XML.format(code=code, msg=msg).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


# ----------------------------------------------------------------------------- fixture

try:
    import pytest
except ImportError:  # pragma: no cover - the proxy itself works without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def flaky_s3(s3_server, monkeypatch):
        """A :class:`FaultProxy` in front of the session's S3 server, no faults until configured.

        Points ``AWS_ENDPOINT_URL`` at the proxy for *this process* (driver-side code: imports,
        the registry, storage, prepare's driver-side reads and writes). ``medxfer.storage``
        caches boto3 clients per endpoint, so clients made here go through the proxy and the
        session's ordinary clients are untouched. Ray workers of the session cluster still have
        the direct endpoint they got at cluster start; a test that needs workers behind the
        proxy passes ``{"env_vars": {"AWS_ENDPOINT_URL": proxy.url}}`` as a ``runtime_env``.
        """
        proxy = FaultProxy(s3_server, seed=1234).start()
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy
        proxy.stop()
