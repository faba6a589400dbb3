"""A tiny fault-injecting HTTP proxy in front of the test S3 server (127.0.0.1 only).

Forwards every request unchanged (the Host header too, so SigV4 signatures
stay valid for servers that check them), records method, upload id and
status of each exchange, and on request answers with an injected error,
delays a request, or forwards it and holds the answer back (a client that
dies while waiting sees S3 having acted without knowing it).
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Exchange:
    """One request the proxy saw, with the status it answered."""

    method: str
    path: str
    upload_id: str | None
    status: int
    injected: bool


@dataclass
class Rule:
    """What to do with matching requests: ``fail``, ``delay`` or ``hold``."""

    action: str
    method: str
    upload_id: str | None = None
    times: int | None = None
    """How many matching requests the rule acts on (None: all)."""
    status: int = 500
    code: str = "InternalError"
    seconds: float = 0.0
    nth: int = 1
    seen: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    """``hold``: set once the held request was forwarded upstream."""
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, upload_id: str | None) -> bool:
        return method == self.method and (self.upload_id is None or self.upload_id == upload_id)


class FaultProxy:
    """Proxy ``upstream`` (``http://host:port``) on an ephemeral 127.0.0.1 port."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.exchanges: list[Exchange] = []
        self.rules: list[Rule] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- control ------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        for rule in self.rules:
            rule.release.set()
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget rules (releasing held requests) and recorded exchanges."""
        with self._lock:
            for rule in self.rules:
                rule.release.set()
            self.rules = []
            self.exchanges = []

    def fail(self, method: str = "DELETE", *, upload_id=None, times=1, status=500, code="InternalError") -> Rule:
        """Answer matching requests with an S3 error instead of forwarding them."""
        return self._add(Rule("fail", method, upload_id, times, status=status, code=code))

    def delay(self, method: str, seconds: float) -> Rule:
        """Wait ``seconds`` before forwarding each matching request."""
        return self._add(Rule("delay", method, seconds=seconds))

    def hold(self, method: str = "DELETE", *, nth: int = 1) -> Rule:
        """Forward the ``nth`` matching request, then hold its answer until ``rule.release`` is set."""
        return self._add(Rule("hold", method, times=1, nth=nth))

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    # --- what was seen --------------------------------------------------------

    def aborts(self, upload_id: str | None = None, status: int | None = None) -> list[Exchange]:
        """AbortMultipartUpload requests (DELETE ?uploadId=...) seen, optionally filtered."""
        with self._lock:
            return [
                e for e in self.exchanges
                if e.method == "DELETE" and e.upload_id is not None
                and (upload_id is None or e.upload_id == upload_id) and (status is None or e.status == status)
            ]

    def forwarded(self, method: str) -> int:
        """How many ``method`` requests reached the upstream S3 (injected failures not counted)."""
        with self._lock:
            return sum(1 for e in self.exchanges if e.method == method and not e.injected)

    # --- the server -------------------------------------------------------------

    def _decide(self, method: str, upload_id: str | None) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if not rule.matches(method, upload_id):
                    continue
                if rule.action == "hold":
                    rule.seen += 1
                    if rule.seen == rule.nth:
                        return rule
                    continue
                if rule.times is not None and rule.seen >= rule.times:
                    continue
                rule.seen += 1
                return rule
        return None

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upload_id = parse_qs(urlsplit(self.path).query).get("uploadId", [None])[0]
                rule = proxy._decide(self.command, upload_id)
                if rule is not None and rule.action == "fail":
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule.code}</Code>'
                        f"<Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>"
                    ).encode()
                    proxy._record(Exchange(self.command, self.path, upload_id, rule.status, True))
                    self._answer(rule.status, [("Content-Type", "application/xml")], payload)
                    return
                if rule is not None and rule.action == "delay":
                    time.sleep(rule.seconds)
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    status, reply_headers = response.status, response.getheaders()
                finally:
                    upstream.close()
                proxy._record(Exchange(self.command, self.path, upload_id, status, False))
                if rule is not None and rule.action == "hold":
                    rule.reached.set()
                    rule.release.wait(60)
                passed = [(k, v) for k, v in reply_headers if k.lower() not in _HOP_BY_HOP | {"content-length"}]
                if self.command == "HEAD":
                    passed += [(k, v) for k, v in reply_headers if k.lower() == "content-length"]
                self._answer(status, passed, data)

            def _answer(self, status, headers, payload):
                try:
                    self.send_response_only(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    self.wfile.flush()
                except OSError:  # the client is gone (killed worker): nothing to tell
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
