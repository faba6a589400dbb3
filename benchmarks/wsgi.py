"""WSGI entry of the benchmarks: the API app (oarepo_s3.app), configured from the environment, with byte counters.

gunicorn imports ``wsgi:app`` (``--chdir benchmarks``) in every worker; the
configuration is the JSON in ``OAREPO_S3_BENCH_CONFIG``. The database must
already be seeded (the benchmark does it before starting gunicorn).

Every request and response body passing through the app is counted at the
WSGI level: ``GET /_bench/bytes`` answers this worker's counts (bytes the
app read from request bodies, bytes it wrote in response bodies, requests)
and is itself not counted. Bodies that are neither JSON nor the short page
of a redirect are counted apart as well (``non_json_*``): a file's bytes
passing through the app would show there; ``POST /_bench/echo`` (counted)
sends its body back as octet-stream, so a benchmark can show that they do.
The payload benchmark runs one worker, so the counts are the app's.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import quiet

quiet()

from oarepo_s3.app import create_app  # noqa: E402


class ByteCounter:
    """WSGI middleware: counts body bytes read from requests and written in responses."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.counts = {"request_body_bytes": 0, "response_body_bytes": 0, "requests": 0,
                       "declared_request_body_bytes": 0,
                       "non_json_request_body_bytes": 0, "non_json_response_body_bytes": 0}

    def add(self, **amounts) -> None:
        with self.lock:
            for name, n in amounts.items():
                self.counts[name] += n

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_bench/bytes":
            with self.lock:
                body = json.dumps({**self.counts, "pid": os.getpid()}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        # Declared as well as read: a body the app never reads still reached it.
        self.add(requests=1, declared_request_body_bytes=int(environ.get("CONTENT_LENGTH") or 0))
        stream = environ["wsgi.input"]
        request_json = "json" in (environ.get("CONTENT_TYPE") or "")
        counter = self

        class Counting:
            def _count(self, data):
                counter.add(request_body_bytes=len(data))
                if not request_json:
                    counter.add(non_json_request_body_bytes=len(data))
                return data

            def read(self, *a):
                return self._count(stream.read(*a))

            def readline(self, *a):
                return self._count(stream.readline(*a))

            def readlines(self, *a):
                return [self._count(line) for line in stream.readlines(*a)]

            def __iter__(self):
                return iter(self.readline, b"")

        environ["wsgi.input"] = Counting()
        content_type = {}

        def counting_start_response(status, headers, exc_info=None):
            content_type["value"] = next((v for k, v in headers if k.lower() == "content-type"), "")
            content_type["redirect"] = status.startswith("3")
            return start_response(status, headers, exc_info)

        app = echo if environ.get("PATH_INFO") == "/_bench/echo" else self.app
        return self._counted(app(environ, counting_start_response), content_type)

    def _counted(self, iterable, content_type: dict):
        try:
            for chunk in iterable:
                self.add(response_body_bytes=len(chunk))
                # JSON answers and the short "Redirecting..." page of a 302 are control messages.
                if not content_type.get("redirect") and "json" not in content_type.get("value", ""):
                    self.add(non_json_response_body_bytes=len(chunk))
                yield chunk
        finally:
            if hasattr(iterable, "close"):
                iterable.close()


def echo(environ, start_response):
    """``/_bench/echo``: answers the request body as octet-stream (counted), to show the counters see payload."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


app = ByteCounter(create_app(json.loads(os.environ["OAREPO_S3_BENCH_CONFIG"])))
