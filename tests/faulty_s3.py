"""A flaky object store for tests: an HTTP proxy on 127.0.0.1 in front of an S3 endpoint (moto) that injects
the failures a real store shows at archive scale, with a seeded probability per request.

Faults (each request draws at most one):

* ``slowdown``: 503 ``SlowDown`` (S3's throttling answer), the request never reaches the store;
* ``error500``: 500 ``InternalError``, likewise;
* ``reset``: the connection is reset (TCP RST) before the request is forwarded;
* ``reset_after``: the request is forwarded and the store acts on it, then the connection is reset instead of
  answering: the client cannot tell whether a write happened (a retried conditional PUT then meets its own
  object);
* ``slow``: the answer comes after ``slow_s`` seconds.

:attr:`FaultyS3.denied` names object paths (suffixes) answered 403 ``AccessDenied`` every time: a failure no
retry cures. :attr:`FaultyS3.lose_answer_once` names paths whose next write is acted on and then reset.
:attr:`FaultyS3.first` lists faults the first requests of a class get, in order, before the random draw takes
over (so a short run meets every fault and class for sure).

Requests are classed ``read`` (GET/HEAD of an object), ``list`` (GET of a bucket: listings, bucket queries) and
``write`` (PUT, POST, DELETE); :attr:`FaultyS3.stats` counts ``(class, fault)`` so a test can show what it met.
"""

from __future__ import annotations

import http.client
import io
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("slowdown", "error500", "reset", "reset_after", "slow")
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "expect"}
_XML = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{msg}</Message>'
        "<RequestId>faulty-s3</RequestId></Error>")


class FaultyS3:
    """The proxy. ``rates`` maps a request class (``read``, ``list``, ``write``) to ``{fault: probability}``
    (the sum per class must stay below 1)."""

    def __init__(self, upstream: str, rates: dict[str, dict[str, float]], *, seed: int = 0, slow_s: float = 0.4):
        for op, r in rates.items():
            if op not in ("read", "list", "write") or set(r) - set(FAULTS) or sum(r.values()) >= 1:
                raise ValueError(f"bad fault rates {rates}")
        up = urlsplit(upstream)
        if up.hostname != "127.0.0.1":
            raise ValueError("the faulty proxy only fronts a store on 127.0.0.1")
        self.upstream = (up.hostname, up.port)
        self.rates, self.slow_s = dict(rates), slow_s
        self.enabled = True
        self.denied: set[str] = set()
        self.lose_answer_once: set[str] = set()
        self.first: dict[str, list[str]] = {}
        self.stats: Counter = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.faulty = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FaultyS3":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def faults(self, kind: str | None = None) -> int:
        """How many faults were injected (of ``kind``, or all)."""
        return sum(n for (_, f), n in self.stats.items() if f != "ok" and (kind is None or f == kind))

    def draw(self, op: str) -> str:
        with self._lock:
            x = self._rng.random()
            fault = "ok"
            forced = self.first.get(op)
            if self.enabled and forced:
                fault = forced.pop(0)
            elif self.enabled:
                for name in FAULTS:
                    x -= self.rates.get(op, {}).get(name, 0.0)
                    if x < 0:
                        fault = name
                        break
            self.stats[(op, fault)] += 1
        return fault

    def forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in _HOP and k.lower() != "content-length"}
            if body or method in ("PUT", "POST"):
                out["Content-Length"] = str(len(body))
            conn.request(method, path, body=body or None, headers=out)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()


def classify(method: str, path: str) -> str:
    if method in ("PUT", "POST", "DELETE"):
        return "write"
    bucket_only = len([p for p in urlsplit(path).path.split("/") if p]) <= 1
    return "list" if bucket_only else "read"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect; every answer carries Content-Length

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _proxy(self) -> None:
        proxy: FaultyS3 = self.server.faulty
        body = self._body()
        if proxy.enabled and self.command in ("GET", "HEAD") and urlsplit(self.path).path.endswith(tuple(proxy.denied)):
            return self._answer(403, [("Content-Type", "application/xml")],
                                _XML.format(code="AccessDenied", msg="injected: access denied").encode())
        fault = proxy.draw(classify(self.command, self.path))
        with proxy._lock:
            once = {s for s in proxy.lose_answer_once if self.command == "PUT" and urlsplit(self.path).path.endswith(s)}
            proxy.lose_answer_once -= once
        if once:
            fault = "reset_after"
            proxy.stats[("write", "reset_after")] += 1
        if fault == "reset":
            return self._reset()
        if fault in ("slowdown", "error500"):
            code, status = ("SlowDown", 503) if fault == "slowdown" else ("InternalError", 500)
            return self._answer(status, [("Content-Type", "application/xml")],
                                _XML.format(code=code, msg=f"injected {fault}").encode())
        if fault == "slow":
            time.sleep(proxy.slow_s)
        status, headers, data = proxy.forward(self.command, self.path, self.headers, body)
        if fault == "reset_after":
            return self._reset()
        self._answer(status, headers, data)

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        length = None
        for k, v in headers:
            if k.lower() == "content-length":
                length = v
            elif k.lower() not in _HOP and k.lower() not in ("server", "date"):
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", length or "0")  # HEAD tells the object's size, sends no body
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and status not in (204, 304):
            self.wfile.write(data)

    def _reset(self) -> None:
        """Close with SO_LINGER 0: the peer gets a TCP RST, not an answer."""
        self.close_connection = True
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.wfile.close()
        self.rfile.close()
        sock.close()
        self.rfile, self.wfile = io.BytesIO(), io.BytesIO()  # the handler's final flush/close go nowhere
