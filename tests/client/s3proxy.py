"""A fault-injecting HTTP proxy in front of the test S3 endpoint, on 127.0.0.1.

The app is configured with the proxy as its S3 endpoint, so every presigned
URL (and every control call of the app) goes through it. It forwards
requests unchanged (the ``Host`` header too, so SigV4 signatures stay
valid), logs each one, and on request drops a connection, flips a byte of a
part, answers 403 "Request has expired", cuts a download short, or slows
parts down.

moto does not check ``Content-MD5``; with ``check_content_md5`` the proxy
refuses a part whose bytes do not match it with S3's own ``400 BadDigest``
(AWS and Ceph RGW do this themselves, so the Ceph lane leaves it off).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from oarepo_s3_client.sender import PROBE_BODY

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "expect", "content-length"}
EXPIRED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                b"<Message>Request has expired</Message></Error>")
BAD_DIGEST_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>BadDigest</Code>'
                   b"<Message>The Content-MD5 you specified did not match what we received.</Message></Error>")


@dataclass
class Entry:
    """One request the proxy saw."""

    method: str
    path: str
    query: dict
    headers: dict
    part: int | None
    range: str | None
    action: str = "forward"
    status: int = 0
    started: float = 0.0
    is_probe: bool = False
    """The client's SHA-256 probe (``checksum`` auto/sha256), not a part of the file."""

    @property
    def is_part_put(self) -> bool:
        return self.method == "PUT" and self.part is not None


@dataclass
class Fault:
    """Do ``action`` to the next ``times`` requests matching ``method`` (and ``part``, if given)."""

    action: str
    method: str = "PUT"
    part: int | None = None
    times: int = 1
    when: object = None
    """Optional predicate on the :class:`Entry`."""


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    log: list[Entry] = field(default_factory=list)
    check_content_md5: bool = False
    put_delay: float = 0.0
    active: int = 0


class FaultProxy:
    """Start with :meth:`start`; point an S3 client or the app at :attr:`url`."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.state = _State()
        self.lock = threading.Lock()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- test controls ---------------------------------------------------------------

    def reset(self, *, check_content_md5: bool = False) -> None:
        with self.lock:
            self.state = _State(check_content_md5=check_content_md5)

    def add_fault(self, action: str, *, method: str = "PUT", part: int | None = None, times: int = 1,
                  when=None) -> None:
        """``action``: drop, corrupt, expire, error503, truncate (a GET's body is cut in half), lie
        (the part is stored damaged, but the answer carries the MD5 of the bytes sent), fake_etag
        (a HEAD answers a wrong ETag), refuse_early (a part PUT is answered 403 before its body is
        read, then the connection is closed, as S3 may do to a refused signature)."""
        with self.lock:
            self.state.faults.append(Fault(action, method, part, times, when))

    def set_put_delay(self, seconds: float) -> None:
        """Hold every part PUT this long before forwarding it (to interrupt uploads half-way)."""
        self.state.put_delay = seconds

    @property
    def log(self) -> list[Entry]:
        with self.lock:
            return list(self.state.log)

    def part_puts(self, status: int | None = None) -> list[Entry]:
        """The PUTs of file parts (the client's SHA-256 probes are in :meth:`probes`)."""
        return [e for e in self.log if e.is_part_put and not e.is_probe and (status is None or e.status == status)]

    def probes(self) -> list[Entry]:
        """The client's SHA-256 probes: a few known bytes PUT as a part with another SHA-256 signed in."""
        return [e for e in self.log if e.is_part_put and e.is_probe]

    def clear_log(self) -> None:
        with self.lock:
            self.state.log.clear()

    def wait_idle(self, timeout: float = 30.0, settle: float = 0.5) -> None:
        """Wait until no request has been handled for ``settle`` seconds (e.g. after killing a client).

        A connection the client dropped mid-body may reach its handler a moment
        later, so one idle instant is not enough.
        """
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline:
            if self.state.active == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle:
                    return
            else:
                idle_since = None
            time.sleep(0.02)
        raise TimeoutError("the proxy is still busy")

    def _take_fault(self, entry: Entry, early: bool = False) -> str:
        """The action for this request; ``early`` (before the body is read) only takes ``refuse_early``."""
        with self.lock:
            for fault in self.state.faults:
                if fault.times <= 0 or fault.method != entry.method or (fault.action == "refuse_early") != early:
                    continue
                if fault.part is not None and fault.part != entry.part:
                    continue
                if fault.when is not None and not fault.when(entry):
                    continue
                fault.times -= 1
                return fault.action
        return "forward"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.owner
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        part = int(query["partNumber"]) if "partNumber" in query else None
        entry = Entry(self.command, split.path, query, dict(self.headers), part, self.headers.get("Range"),
                      started=time.monotonic())
        with proxy.lock:
            proxy.state.log.append(entry)
            proxy.state.active += 1
        try:
            if entry.is_part_put and int(self.headers.get("Content-Length") or 0) != len(PROBE_BODY):
                if proxy._take_fault(entry, early=True) == "refuse_early":
                    entry.action = "refuse_early"
                    self._reply(entry, 403, EXPIRED_BODY, {"Content-Type": "application/xml", "Connection": "close"})
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the unread body makes the client's send fail (reset)
                    return
            body = self._body()
            if len(body) < int(self.headers.get("Content-Length") or 0):
                # The client went away mid-body (Ctrl-C, kill): S3 would never see a whole request, so
                # do not forward a shortened one (RGW 16 even stores an empty body whatever was signed).
                entry.action, entry.status = "client-gone", -1
                self.close_connection = True
                return
            entry.is_probe = body == PROBE_BODY
            entry.action = action = "forward" if entry.is_probe else proxy._take_fault(entry)
            if entry.is_part_put and proxy.state.put_delay:
                time.sleep(proxy.state.put_delay)
            if action == "drop":
                entry.status = -1
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if action == "expire":
                return self._reply(entry, 403, EXPIRED_BODY, {"Content-Type": "application/xml"})
            if action == "error503":
                return self._reply(entry, 503, b"<Error><Code>SlowDown</Code></Error>",
                                   {"Content-Type": "application/xml", "Retry-After": "0"})
            original = body
            if action in ("corrupt", "lie") and body:
                flipped = bytearray(body)
                flipped[len(flipped) // 2] ^= 0xFF
                body = bytes(flipped)
            md5 = self.headers.get("Content-MD5")
            if proxy.state.check_content_md5 and md5 and self.command == "PUT" and action != "lie":
                if base64.b64encode(hashlib.md5(body).digest()).decode() != md5:
                    return self._reply(entry, 400, BAD_DIGEST_BODY, {"Content-Type": "application/xml"})
            status, headers, data = self._forward(body)
            if action == "fake_etag" and status == 200:  # a faulty S3: the object's ETag is not its parts'
                headers = [(k, v) for k, v in headers if k.lower() != "etag"]
                headers.append(("ETag", '"00000000000000000000000000000000-2"'))
            if action == "lie" and status == 200:  # a faulty S3: stores damaged bytes, claims the sent ones' MD5
                headers = [(k, v) for k, v in headers if k.lower() != "etag"]
                headers.append(("ETag", f'"{hashlib.md5(original).hexdigest()}"'))
            if action == "truncate" and len(data) > 1:
                entry.status = -2
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            return self._reply(entry, status, data, headers)
        finally:
            with proxy.lock:
                proxy.state.active -= 1

    def _forward(self, body: bytes):
        host, port = self.owner.upstream
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            if self.command == "HEAD":
                out.append(("Content-Length", response.getheader("Content-Length", "0")))
            return response.status, out, data
        finally:
            conn.close()

    def _reply(self, entry: Entry, status: int, data: bytes, headers) -> None:
        """Answer; ``headers`` is a dict or a list of pairs (a HEAD's carry upstream's Content-Length)."""
        entry.status = status
        self.send_response(status)
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        for name, value in pairs:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
        else:
            self.end_headers()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
