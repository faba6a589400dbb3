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

**CPU per request type** (:class:`CpuByRoute`, the concurrency benchmark):
every request of a known type (:data:`ROUTES`: init, sign, complete and
the baseline) is timed inside the worker, CPU with ``time.thread_time()``
(``CLOCK_THREAD_CPUTIME_ID``, this thread only: a sync worker serves one
request at a time on one thread) and wall time, from the WSGI call to the
end of its response body (Flask's teardown included). ``GET /_bench/cpu``
answers this worker's totals per type (not counted, not timed). What
falls outside is gunicorn's own work around a request (accepting,
parsing the HTTP head, writing the answer): the same for every type.

**The baseline** (``GET /_bench/baseline/<pid>``, a blueprint of this
module, not of the product): what any authenticated Invenio endpoint
costs. The same app-level hooks as the API (invenio-oauth2server's bearer
token check, flask-login's user, invenio-access's identity loaded on
login), the same ``require_authenticated``, one ORM read (the record row
by its PID, joined, through ``db.session``), an owner check and a small
JSON answer; none of the API blueprint's own hooks (body bounds,
cross-site check, rate limits), which are ours.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import quiet

quiet()

from flask import Blueprint, abort, jsonify  # noqa: E402
from sqlalchemy import event as sa_event  # noqa: E402

from oarepo_s3.app import create_app  # noqa: E402

ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("init", "POST", re.compile(r"/files/$")),
    ("sign", "POST", re.compile(r"/files/.+/multipart/sign$")),
    ("complete", "POST", re.compile(r"/files/.+/complete-multipart$")),
    ("baseline", "GET", re.compile(r"^/_bench/baseline/")),
)
"""Request types whose CPU is measured: (name, method, pattern of PATH_INFO)."""

COMPONENTS = ("auth", "s3", "sql")
"""Parts of a request's CPU measured apart (each outside the others: the token check's own queries are "auth"):
invenio-oauth2server's token check with flask-login's user and invenio-access's identity (an app-level
``before_request``), the S3 control calls (``oarepo_s3.s3.S3Client.call``: botocore, HTTP), and the database
driver (cursor execute, commit, rollback). The rest is Flask, SQLAlchemy's ORM, Invenio's models and ours."""


def route_of(environ) -> str | None:
    method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
    return next((name for name, m, pattern in ROUTES if m == method and pattern.search(path)), None)


class CpuByRoute:
    """WSGI middleware: CPU (this thread) and wall seconds of each request, summed by :data:`ROUTES` type.

    The CPU of the garbage collector's passes during a request is summed
    apart as well (``gc_s``, part of ``cpu_s``): a pass runs when enough
    objects were allocated, so it lands on whichever request crossed the
    threshold, and costs with the size of the whole heap (Invenio's).
    """

    def __init__(self, app):
        self.app = app
        self.totals: dict[str, dict[str, float]] = {}
        self.gc = 0.0
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)
        self.parts: dict[str, float] = {}  # CPU by component (COMPONENTS) during the current request
        self._inside: str | None = None

    def timed(self, part: str, f):
        """``f``, its CPU charged to ``part`` of the current request (unless it runs inside another part)."""

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            if self._inside is not None:
                return f(*args, **kwargs)
            self._inside, started = part, time.thread_time()
            try:
                return f(*args, **kwargs)
            finally:
                self.parts[part] = self.parts.get(part, 0.0) + time.thread_time() - started
                self._inside = None

        return wrapper

    def instrument(self, flask_app) -> None:
        """Charge the token check, the S3 control calls and the SQL driver to their :data:`COMPONENTS`."""
        from invenio_db import db

        from oarepo_s3.s3 import S3Client

        hooks = flask_app.before_request_funcs.setdefault(None, [])
        hooks[:] = [self.timed("auth", f) if f.__name__ == "verify_oauth_token_and_set_current_user" else f
                    for f in hooks]
        S3Client.call = self.timed("s3", S3Client.call)
        with flask_app.app_context():
            engine = db.engine
        state: dict[str, float] = {}

        @sa_event.listens_for(engine, "before_cursor_execute")
        def before(*args):
            if self._inside is None:
                state["started"] = time.thread_time()

        @sa_event.listens_for(engine, "after_cursor_execute")
        def after(*args):
            if self._inside is None and "started" in state:
                self.parts["sql"] = self.parts.get("sql", 0.0) + time.thread_time() - state.pop("started")

        for name in ("do_commit", "do_rollback"):  # the transaction's end, and the pool's reset of a connection
            setattr(engine.dialect, name, self.timed("sql", getattr(engine.dialect, name)))

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            self.gc += time.thread_time() - self._gc_started

    def add(self, route: str, cpu: float, wall: float, gc_cpu: float) -> None:
        t = self.totals.setdefault(route, {"count": 0, "cpu_s": 0.0, "wall_s": 0.0, "gc_s": 0.0,
                                           **{f"{c}_s": 0.0 for c in COMPONENTS}})
        t["count"] += 1
        t["cpu_s"] += cpu
        t["wall_s"] += wall
        t["gc_s"] += gc_cpu
        for c in COMPONENTS:
            t[f"{c}_s"] += self.parts.get(c, 0.0)

    def __call__(self, environ, start_response):
        route = route_of(environ)
        if route is None:
            return self.app(environ, start_response)
        cpu, wall, gc_cpu = time.thread_time(), time.perf_counter(), self.gc
        self.parts.clear()

        def done() -> None:
            self.add(route, time.thread_time() - cpu, time.perf_counter() - wall, self.gc - gc_cpu)

        try:
            body = self.app(environ, start_response)
        except BaseException:
            done()
            raise
        return _Timed(body, done)


class _Timed:
    """A response body whose ``close`` (after gunicorn has sent it) ends the request's timing."""

    def __init__(self, body, done):
        self.body, self.done = body, done

    def __iter__(self):
        return iter(self.body)

    def close(self):
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.done()


def baseline_blueprint() -> Blueprint:
    """``GET /_bench/baseline/<pid>``: token auth, one ORM read, an owner check, a small JSON answer."""
    import sqlalchemy as sa
    from invenio_db import db
    from invenio_pidstore.models import PersistentIdentifier
    from invenio_records.models import RecordMetadata

    from oarepo_s3.permissions import require_authenticated

    bp = Blueprint("bench_baseline", __name__, url_prefix="/_bench")

    @bp.get("/baseline/<pid_value>")
    def baseline(pid_value: str):
        user_id = require_authenticated()
        record = db.session.execute(
            sa.select(RecordMetadata)
            .join(PersistentIdentifier, PersistentIdentifier.object_uuid == RecordMetadata.id)
            .where(PersistentIdentifier.pid_type == "recid", PersistentIdentifier.pid_value == pid_value)
        ).scalar_one_or_none()
        if record is None:
            abort(404)
        data = record.json
        if user_id not in data.get("owners", ()):
            abort(403)
        return jsonify({"id": pid_value, "status": data.get("status"), "owners": data["owners"],
                        "updated": record.updated.isoformat()})

    return bp


class ByteCounter:
    """WSGI middleware: counts body bytes read from requests and written in responses."""

    def __init__(self, app, cpu: CpuByRoute | None = None):
        self.app = app
        self.cpu = cpu
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
        if environ.get("PATH_INFO") == "/_bench/cpu":
            body = json.dumps({"pid": os.getpid(), "routes": self.cpu.totals if self.cpu else {}}).encode()
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


def build():
    config = json.loads(os.environ["OAREPO_S3_BENCH_CONFIG"])
    if os.environ.get("OAREPO_S3_BENCH_APP") == "rdm":  # the InvenioRDM stand-in (benchmarks/rdm_app.py)
        from rdm_app import create_rdm_bench_app

        flask_app = create_rdm_bench_app(config)
    else:
        flask_app = create_app(config)
    flask_app.register_blueprint(baseline_blueprint())
    cpu = CpuByRoute(flask_app.wsgi_app)
    cpu.instrument(flask_app)
    flask_app.wsgi_app = cpu  # inside the byte counters: their own work is not charged to a request type
    return ByteCounter(flask_app, cpu)


app = build()
