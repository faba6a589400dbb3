"""Helpers shared by the tests: a live HTTP server, permissions, payloads."""

from __future__ import annotations

import hashlib
import os
import threading

from werkzeug.serving import make_server


def allow_all(*args, **kwargs):
    """files-rest permission factory that allows everything (tests of storage, not of permissions)."""

    class Allow:
        def can(self):
            return True

    return Allow()


class LiveServer:
    """Serve a Flask app on 127.0.0.1 (ephemeral port) in a thread; count what it receives."""

    def __init__(self, app):
        self.app = app
        self.received_bytes = 0
        self._server = make_server("127.0.0.1", 0, self._counting_app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _counting_app(self, environ, start_response):
        """Count request body bytes the app reads: proof that payloads bypass it."""
        stream = environ["wsgi.input"]
        outer = self

        class Counting:
            def read(self, *a):
                data = stream.read(*a)
                outer.received_bytes += len(data)
                return data

            def readline(self, *a):
                data = stream.readline(*a)
                outer.received_bytes += len(data)
                return data

            def __iter__(self):
                return iter(self.readline, b"")

        environ["wsgi.input"] = Counting()
        return self.app.wsgi_app(environ, start_response)

    def start(self):
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._thread.join(timeout=5)


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random payload (fast: repeats a random 1 MiB block, shifted)."""
    block = hashlib.shake_256(f"oarepo-s3-{seed}".encode()).digest(1024 * 1024)
    out = bytearray()
    i = 0
    while len(out) < size:
        out += block[i % 251 :] + block[: i % 251]
        i += 1
    return bytes(out[:size])


def fresh_random_bytes(size: int) -> bytes:
    """Non-repeating random payload, for tests where repetition could hide a bug."""
    return os.urandom(size)


def put_parts(session: dict, payload: bytes, numbers=None, http=None) -> list[dict]:
    """PUT the payload's parts to the session's presigned URLs (real HTTP); return the seed's part list."""
    import requests

    http = http or requests.Session()
    chunk = session["chunk_size"]
    parts = []
    for n, url in enumerate(session["parts_url"], start=1):
        if numbers is not None and n not in numbers:
            continue
        body = payload[(n - 1) * chunk : n * chunk]
        response = http.put(url, data=body, timeout=60)
        assert response.status_code == 200, response.text
        parts.append({"ETag": response.headers["ETag"], "PartNum": n})
    return parts
