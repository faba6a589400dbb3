"""A fault-injecting HTTP proxy in front of the test S3 server (moto or Ceph RGW), on 127.0.0.1.

The app, a Celery worker or the upload client (through presigned URLs) talks
to :attr:`FaultProxy.url` instead of S3. Every request is forwarded unchanged
(the ``Host`` header too, so SigV4 signatures stay valid) and recorded as an
:class:`Exchange`. A test adds :class:`Fault` rules with
:meth:`FaultProxy.add_fault`; the first rule that matches a request acts on it,
so a request meets at most one fault. Actions:

- ``fail``: answer S3's error ``status``/``code`` without forwarding;
  ``expire`` (403 "Request has expired") and ``error503`` (503 SlowDown,
  ``Retry-After: 0``) are the two named ones the client meets;
- ``refuse_early``: answer 403 "Request has expired" before reading the
  body, then close the connection (S3 may do so to a refused signature);
- ``drop``: close the connection without an answer;
- ``delay``: wait ``seconds``, then forward (S3 may act after the caller
  gave up);
- ``hold``: forward, then keep S3's answer until ``fault.release`` is set
  (S3 acted, the caller does not know yet); ``fault.reached`` says when;
- ``corrupt``: flip a byte of the body; ``lie``: flip it too, but answer the
  ETag of the bytes sent (a faulty S3 that stores damaged bytes);
- ``truncate``: cut the answer's body in half; ``fake_etag``: answer a wrong
  ETag (a faulty S3's HEAD of a completed object).

moto does not check ``Content-MD5``; with :attr:`FaultProxy.check_content_md5`
the proxy refuses a PUT whose bytes do not match it with S3's own ``400
BadDigest`` (AWS and Ceph RGW do it themselves, so the Ceph lane leaves it off).

The client's SHA-256 probe (a part PUT with ``PROBE_SHA256``, the hash of no
part, signed in) is recognised, listed apart by :meth:`FaultProxy.probes`
and never faulted, so part faults hit file parts.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

try:
    from oarepo_s3_client.sender import PROBE_SHA256
except ImportError:  # the client is not installed: use its source tree (as tests/client/conftest.py does)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))
    from oarepo_s3_client.sender import PROBE_SHA256

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "expect", "content-length"})
"""Headers not passed on either way: each side of the proxy frames its own messages."""

ERRORS = {  # action -> (status, S3 code, message, extra headers)
    "expire": (403, "AccessDenied", "Request has expired", {}),
    "refuse_early": (403, "AccessDenied", "Request has expired", {"Connection": "close"}),
    "error503": (503, "SlowDown", "Please reduce your request rate.", {"Retry-After": "0"}),
}
XML = {"Content-Type": "application/xml"}


def s3_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>fault-proxy</RequestId></Error>").encode()


@dataclass(eq=False)
class Exchange:
    """One request the proxy saw, and what came of it.

    ``status``: the answer's (S3's or the injected one); 0 while in flight,
    -1 when the connection was dropped (by the proxy, or by a client gone
    mid-body), -2 when the answer's body was cut short.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    range: str | None
    action: str = "forward"
    status: int = 0
    is_probe: bool = False

    @property
    def part(self) -> int | None:
        return int(self.query["partNumber"]) if "partNumber" in self.query else None

    @property
    def upload_id(self) -> str | None:
        return self.query.get("uploadId")

    @property
    def is_part_put(self) -> bool:
        return self.method == "PUT" and self.part is not None


@dataclass(eq=False)
class Fault:
    """Do ``action`` to requests that match, from the ``nth`` match on, ``times`` times (None: every time).

    A request matches by ``method`` (None: any), and by ``part``,
    ``upload_id`` and the predicate ``when(exchange)`` where given.
    """

    action: str
    method: str | None = "PUT"
    part: int | None = None
    upload_id: str | None = None
    when: Callable[[Exchange], bool] | None = None
    nth: int = 1
    times: int | None = 1
    status: int = 500
    code: str = "InternalError"
    """``fail``: the S3 error answered."""
    seconds: float = 0.0
    """``delay``: how long."""
    matched: int = 0
    acted: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    """``hold``: set once S3 answered the held request."""
    release: threading.Event = field(default_factory=threading.Event)
    """``hold``: set it to pass S3's answer on (reset/stop/remove set it too)."""

    def matches(self, e: Exchange) -> bool:
        return ((self.method is None or e.method == self.method) and (self.part is None or e.part == self.part)
                and (self.upload_id is None or e.upload_id == self.upload_id)
                and (self.when is None or self.when(e)))


class FaultProxy:
    """Proxy ``upstream`` (``http://host:port``): :meth:`start` it, point S3 clients at :attr:`url`."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.check_content_md5 = False
        self.faults: list[Fault] = []
        self._log: list[Exchange] = []
        self._active = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"proxy": self}))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.reset()
        self._server.shutdown()
        self._server.server_close()

    # --- faults -----------------------------------------------------------------------

    def add_fault(self, action: str, method: str | None = "PUT", **options) -> Fault:
        """Add a :class:`Fault` (``options`` are its fields); it acts after the faults added before it."""
        fault = Fault(action, method, **options)
        with self._lock:
            self.faults.append(fault)
        return fault

    def slow_parts(self, seconds: float) -> Fault:
        """Delay every part PUT (to interrupt uploads half-way); :meth:`remove` the fault to end it."""
        return self.add_fault("delay", "PUT", when=lambda e: e.part is not None, seconds=seconds, times=None)

    def remove(self, fault: Fault) -> None:
        """Stop ``fault`` (a held answer is passed on)."""
        with self._lock:
            self.faults = [f for f in self.faults if f is not fault]
        fault.release.set()

    def reset(self) -> None:
        """Forget the faults (passing held answers on) and the log; ``check_content_md5`` stays."""
        with self._lock:
            for fault in self.faults:
                fault.release.set()
            self.faults, self._log = [], []

    def _take(self, e: Exchange, early: bool) -> Fault | None:
        """The fault acting on ``e``; ``early`` (before the body is read) only takes ``refuse_early``."""
        with self._lock:
            for fault in self.faults:
                if (fault.action == "refuse_early") != early or not fault.matches(e):
                    continue
                fault.matched += 1
                if fault.matched >= fault.nth and (fault.times is None or fault.acted < fault.times):
                    fault.acted += 1
                    return fault
        return None

    # --- what was seen ----------------------------------------------------------------

    @property
    def log(self) -> list[Exchange]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log = []

    def part_puts(self, status: int | None = None) -> list[Exchange]:
        """The PUTs of file parts (the client's SHA-256 probes are in :meth:`probes`)."""
        return [e for e in self.log if e.is_part_put and not e.is_probe and status in (None, e.status)]

    def probes(self) -> list[Exchange]:
        """The client's SHA-256 probes: a part PUT with a SHA-256 signed in that no part has."""
        return [e for e in self.log if e.is_part_put and e.is_probe]

    def aborts(self, upload_id: str | None = None, status: int | None = None) -> list[Exchange]:
        """The AbortMultipartUpload requests (DELETE ?uploadId=...), optionally of one upload or status."""
        return [e for e in self.log if e.method == "DELETE" and e.upload_id is not None
                and upload_id in (None, e.upload_id) and status in (None, e.status)]

    def wait_idle(self, timeout: float = 30.0, settle: float = 0.5) -> None:
        """Wait until no request has been in flight for ``settle`` seconds (e.g. after killing a client).

        A connection the client dropped mid-body may reach its handler a
        moment later, so one idle instant is not enough.
        """
        deadline, idle_since = time.monotonic() + timeout, None
        while (now := time.monotonic()) < deadline:
            if self._active:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= settle:
                return
            time.sleep(0.02)
        raise TimeoutError("the proxy is still busy")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, *args) -> None:  # quiet
        pass

    def _handle(self) -> None:
        proxy, split = self.proxy, urlsplit(self.path)
        e = Exchange(self.command, split.path, {k: v[0] for k, v in parse_qs(split.query).items()},
                     dict(self.headers), self.headers.get("Range"))
        with proxy._lock:
            proxy._log.append(e)
            proxy._active += 1
        try:
            self._serve(e)
        except OSError:  # the caller went away (a killed worker, a timed-out client), or S3 did: just close
            self.close_connection = True
        finally:
            with proxy._lock:
                proxy._active -= 1

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def _serve(self, e: Exchange) -> None:
        proxy = self.proxy
        length = int(self.headers.get("Content-Length") or 0)
        e.is_probe = self.headers.get("x-amz-content-sha256") == PROBE_SHA256
        if not e.is_probe and (fault := proxy._take(e, early=True)):
            e.action = fault.action
            self._error(e, fault)
            return self._cut()  # the unread body makes the client's send fail (reset)
        body = self._body()
        if len(body) < length:
            # The client went away mid-body (Ctrl-C, kill): S3 would never see a whole request, so do not
            # forward a shortened one (RGW 16 even stores an empty body whatever was signed).
            e.action, e.status = "client-gone", -1
            self.close_connection = True
            return
        fault = None if e.is_probe else proxy._take(e, early=False)
        action = e.action = fault.action if fault else "forward"
        if action == "drop":
            e.status = -1
            return self._cut()
        if action == "fail" or action in ERRORS:
            return self._error(e, fault)
        if action == "delay":
            time.sleep(fault.seconds)
        sent = body
        if action in ("corrupt", "lie") and body:
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0xFF
            body = bytes(flipped)
        md5 = self.headers.get("Content-MD5")
        if proxy.check_content_md5 and md5 and self.command == "PUT" and action != "lie":
            if base64.b64encode(hashlib.md5(body).digest()).decode() != md5:
                message = "The Content-MD5 you specified did not match what we received."
                return self._send(e, 400, s3_error("BadDigest", message), XML)
        status, headers, data = self._forward(body)
        e.status = status
        if action == "hold":
            fault.reached.set()
            fault.release.wait(60)
        if action in ("fake_etag", "lie") and status == 200:  # a faulty S3: the ETag is not the stored bytes'
            etag = "00000000000000000000000000000000-2" if action == "fake_etag" else hashlib.md5(sent).hexdigest()
            headers = [(k, v) for k, v in headers if k.lower() != "etag"] + [("ETag", f'"{etag}"')]
        if action == "truncate" and len(data) > 1:
            self._send(e, status, data[: len(data) // 2], headers, length=len(data))
            e.status = -2
            return self._cut()
        self._send(e, status, data, headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        out = bytearray()
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            out += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers
            pass
        return bytes(out)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=120)
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

    def _error(self, e: Exchange, fault: Fault) -> None:
        injected = (fault.status, fault.code, "injected by the test proxy", {})
        status, code, message, extra = ERRORS.get(fault.action, injected)
        self._send(e, status, s3_error(code, message), {**XML, **extra})

    def _send(self, e: Exchange, status: int, data: bytes, headers, length: int | None = None) -> None:
        """Answer; ``headers``: a dict or pairs (a HEAD's carry S3's Content-Length, and no body)."""
        e.status = status
        self.send_response_only(status)
        for name, value in headers.items() if isinstance(headers, dict) else headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)
        self.wfile.flush()

    def _cut(self) -> None:
        """Close the connection at once, whatever the client still sends or expects."""
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
