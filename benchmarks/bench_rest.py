"""Issue 4 target: what starting a 10,000-part upload and re-signing 1,000 parts cost, and where it goes.

Run::

    .venv/bin/python benchmarks/bench_rest.py [--repeat 5] [--db sqlite|postgresql://...] [--json FILE]

REST requests of the draft-records API, driven **in-process** with Flask's
test client (no HTTP server, so that the breakdown is not dominated by socket
and server noise):

* ``init``: ``POST /draft/records/<pid>/files/?multipart=True`` declaring
  10,000 parts of 5 MiB (S3's limits), answered with 10,000 part URLs;
* ``sign``: ``POST .../files/<key>/multipart/sign {"parts": [1..1000]}``;
* ``sign+MD5``: the same with ``"content_md5"`` for all 1,000 parts (each
  digest is signed into its URL; a separate row, not part of the target).

Everything runs in this process: moto's S3 server in a thread on 127.0.0.1
(real HTTP for the S3 control calls), SQLite in a temporary directory (or the
PostgreSQL database given with ``--db``; it must not hold this app's tables
yet, and they are dropped at the end), the API app (oarepo_s3.app) with a user and a personal
OAuth2 token (``Authorization: Bearer``) and a draft.

**Attribution.** During an *instrumented* request, timing wrappers charge
every moment of the request's wall time (the WSGI call) to exactly one
category, by exclusive time (a wrapper nested in another is subtracted from
it):

* ``S3``   - ``oarepo_s3.s3.S3Client.call`` (botocore and the HTTP round trip
  to moto, whose server thread shares this process);
* ``DB``   - the database driver: SQLAlchemy dialect ``do_execute*``,
  ``do_commit``, ``do_rollback`` (statement execution and commit round trips);
* ``ORM``  - SQLAlchemy Session work around them (execute, flush, commit,
  rollback, close, get, refresh, begin_nested, SessionTransaction commit);
* ``sign`` - ``SigV4Presigner.upload_part_urls`` / ``presign``;
* ``JSON`` - the app's JSON provider ``dumps``/``loads`` and webargs' body
  parsing;
* ``other`` - the rest, split into request parsing (webargs/marshmallow
  validation), ``before_request``/``after_request`` hooks (OAuth2 token
  check...), ``service.sign_parts`` around the presigner, and the remainder
  (Flask dispatch, invenio-records/files-rest Python, serialisers...).

"Overhead beyond DB+S3" is the total minus the S3 and DB (driver) times;
the ratio is total / (S3 + DB).  Plain (uninstrumented) requests run
interleaved with the instrumented ones, so the cost of the wrappers shows.

**Standalone components**, measured outside any request as a cross-check:
CreateMultipartUpload straight through ``current_oarepo_s3.s3`` (then
aborted), a replay of exactly the SQL statements and commits the request made
on a raw DBAPI connection to a copy of the database taken just before the
request (SQLite: backup API; PostgreSQL: ``CREATE DATABASE ... TEMPLATE``),
signing 10,000 / 1,000 URLs with ``current_oarepo_s3.presigner``, and
``app.json.dumps`` of the captured response bodies.

Each measurement runs ``--repeat`` times after two warm-up rounds, in an
order that rotates every round, and medians are reported; a full garbage
collection runs before each timed call (automatic ones may still happen
inside, as they would in production).  Every started upload is deleted
(``DELETE .../files/<key>``, which aborts it in S3) after its run.  The
replay connection is new, so the request's SELECTs are run on it once,
untimed, before the timed replay.
Numbers only, no thresholds: nothing here passes or fails.
"""

from __future__ import annotations

import os

# moto reads this at import time: keep S3's real 5 MiB minimum part size.
os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(5 * 1024 * 1024)

import argparse
import base64
import collections
import functools
import gc
import hashlib
import json
import logging
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
import sqlalchemy as sa
import webargs.core
from moto.server import ThreadedMotoServer
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import NullPool

MiB = 1024 * 1024
INIT_PARTS = 10_000
PART_SIZE = 5 * MiB
SIGN_PARTS = 1_000
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
BUCKET = "bench-rest"
CONTENT_MD5 = {n: base64.b64encode(hashlib.md5(str(n).encode()).digest()).decode() for n in range(1, SIGN_PARTS + 1)}
"""A Content-MD5 (base64) for each re-signed part, for ``sign+MD5``."""

OPERATIONS = ("init", "sign", "sign_md5")
LABELS = {
    "init": f"init {INIT_PARTS:,} parts",
    "sign": f"sign {SIGN_PARTS:,} parts",
    "sign_md5": f"sign {SIGN_PARTS:,} + MD5",
}

CATEGORIES = ("s3", "sql", "orm", "sign", "json", "parse", "hooks", "sign_prep")
"""Attribution categories; ``sql`` is the DB column, ``parse``/``hooks``/``sign_prep`` are parts of "other"."""


# --- attribution ---------------------------------------------------------------------------------


class Attribution:
    """Exclusive wall time per category of the code this thread runs while active."""

    def __init__(self):
        self.thread = threading.get_ident()
        self.active = False
        self.stack: list[list] = []  # [category, start, seconds spent in nested categories]
        self.times: dict[str, float] = {}
        self.counts: collections.Counter = collections.Counter()
        self.ops: list[tuple] = []  # driver-level operations, for the replay
        self.json_objects: list = []
        self.reset()

    def reset(self) -> None:
        self.stack.clear()
        self.times = dict.fromkeys(CATEGORIES, 0.0)
        self.counts = collections.Counter()
        self.ops = []
        self.json_objects = []

    def _enter(self, category: str) -> bool:
        if not self.active or threading.get_ident() != self.thread:
            return False
        for frame in self.stack:
            if frame[0] == category:
                return False  # already inside this category: the outer call accounts for it
        self.stack.append([category, time.perf_counter(), 0.0])
        return True

    def _leave(self) -> None:
        category, start, nested = self.stack.pop()
        elapsed = time.perf_counter() - start
        self.times[category] += elapsed - nested
        if self.stack:
            self.stack[-1][2] += elapsed

    def wrap(self, category: str, fn: Callable, on_call: Callable | None = None) -> Callable:
        """``fn`` charging its time to ``category``; ``on_call(args, kwargs, result)`` counts things."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not self._enter(category):
                return fn(*args, **kwargs)
            try:
                result = fn(*args, **kwargs)
            finally:
                self._leave()
            if on_call is not None:
                on_call(args, kwargs, result)
            return result

        return wrapper


def install_instrumentation(app, att: Attribution) -> None:
    """Wrap the functions whose time is attributed (inactive until ``att.active``)."""
    from invenio_db import db

    import oarepo_s3.s3
    import oarepo_s3.service
    import oarepo_s3.views.parsing
    from oarepo_s3.presign import SigV4Presigner

    def count(name):
        def on_call(args, kwargs, result):
            att.counts[name] += 1

        return on_call

    def s3_call(args, kwargs, result):
        att.counts["s3 calls"] += 1
        att.counts[f"s3 {args[1]}"] += 1

    oarepo_s3.s3.S3Client.call = att.wrap("s3", oarepo_s3.s3.S3Client.call, s3_call)

    for name in ("_execute_internal", "flush", "commit", "rollback", "close", "get", "refresh", "begin_nested"):
        setattr(Session, name, att.wrap("orm", getattr(Session, name)))
    for name in ("commit", "rollback", "close"):
        setattr(SessionTransaction, name, att.wrap("orm", getattr(SessionTransaction, name)))

    with app.app_context():
        dialect = db.engine.dialect

    def record(kind):
        def on_call(args, kwargs, result):
            if kind in ("commit", "rollback"):
                att.counts[f"sql {kind}"] += 1
                att.ops.append((kind, None, None))
                return
            statement = args[1]
            params = args[2] if kind != "execute_no_params" else None
            att.counts["sql statements"] += 1
            att.counts[f"sql {statement.lstrip().split(None, 1)[0].upper()}"] += 1
            att.ops.append(("executemany" if kind == "executemany" else "execute", statement, params))

        return on_call

    dialect.do_execute = att.wrap("sql", dialect.do_execute, record("execute"))
    dialect.do_executemany = att.wrap("sql", dialect.do_executemany, record("executemany"))
    dialect.do_execute_no_params = att.wrap("sql", dialect.do_execute_no_params, record("execute_no_params"))
    dialect.do_commit = att.wrap("sql", dialect.do_commit, record("commit"))
    dialect.do_rollback = att.wrap("sql", dialect.do_rollback, record("rollback"))

    def signed(args, kwargs, result):
        att.counts["urls signed"] += len(result) if isinstance(result, list) else 1

    SigV4Presigner.upload_part_urls = att.wrap("sign", SigV4Presigner.upload_part_urls, signed)
    SigV4Presigner.presign = att.wrap("sign", SigV4Presigner.presign, signed)
    oarepo_s3.service.sign_parts = att.wrap("sign_prep", oarepo_s3.service.sign_parts, count("service.sign_parts"))

    def dumped(args, kwargs, result):
        att.counts["json bytes out"] += len(result)
        att.json_objects.append(args[0])

    app.json.dumps = att.wrap("json", app.json.dumps, dumped)
    app.json.loads = att.wrap("json", app.json.loads)
    webargs.core.parse_json = att.wrap("json", webargs.core.parse_json)
    parser = oarepo_s3.views.parsing.parser
    parser.parse = att.wrap("parse", parser.parse)

    for registry in (app.before_request_funcs, app.after_request_funcs):
        for funcs in registry.values():
            funcs[:] = [att.wrap("hooks", f) for f in funcs]


# --- database copies and replay -------------------------------------------------------------------


class Database:
    """The benchmark's database: its URI, copies taken before a request, and replay connections."""

    def __init__(self, spec: str, workdir: Path):
        self.kind = "sqlite" if spec == "sqlite" else "postgresql"
        self.workdir = workdir
        if self.kind == "sqlite":
            self.path = workdir / "bench.db"
            self.uri = f"sqlite:///{self.path}"
        else:
            self.uri = spec
            self.url = sa.engine.make_url(spec)
        self.copies = 0
        self.copy_note = ""

    def describe(self) -> str:
        if self.kind == "sqlite":
            return f"SQLite {sqlite3.sqlite_version} (WAL) in {self.workdir}"
        return f"PostgreSQL at {self.url.render_as_string(hide_password=True)}"

    def copy(self, engine) -> str | None:
        """A copy of the database as it is now (for replaying the next request), or None."""
        if self.copy_note:
            return None  # an earlier copy failed: do not wait for the server again
        self.copies += 1
        name = f"replay_{os.getpid()}_{self.copies}"
        if self.kind == "sqlite":
            target = self.workdir / f"{name}.db"
            src, dst = sqlite3.connect(self.path), sqlite3.connect(target)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=WAL")
            finally:
                dst.close()
                src.close()
            return str(target)
        engine.dispose()  # CREATE DATABASE ... TEMPLATE needs the source without connections
        try:
            with self._admin() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{self.url.database}"')
        except sa.exc.SQLAlchemyError as e:
            reason = " ".join(str(e.orig or e).split())
            self.copy_note = ("no DB replay: PostgreSQL could not copy the database "
                              f"({type(e.orig or e).__name__}: {reason})")
            return None
        finally:
            warm_up_connection(engine)
        return name

    def _admin(self):
        admin = sa.create_engine(self.url.set(database="template1"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        return admin.connect()

    def connect(self, copy: str):
        """A raw DBAPI connection to a copy, configured like the app's."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(copy, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            return conn
        engine = sa.create_engine(self.url.set(database=copy), poolclass=NullPool)
        return engine.raw_connection()  # closing it closes the server connection (NullPool)

    def drop(self, copy: str) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(copy + suffix).unlink(missing_ok=True)
            return
        with self._admin() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{copy}"')


def warm_up_connection(engine) -> None:
    """Open a pooled connection and touch every table, so a new server connection has warm caches."""
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            conn.exec_driver_sql(f'SELECT 1 FROM "{table}" LIMIT 1').all()
        conn.rollback()


def replay(conn, ops: list[tuple]) -> None:
    """Execute the driver-level operations a request made, in order, on a raw DBAPI connection."""
    cursor = conn.cursor()
    for kind, statement, params in ops:
        if kind == "execute":
            if params is None:
                cursor.execute(statement)
            else:
                cursor.execute(statement, params)
            if cursor.description is not None:
                cursor.fetchall()
        elif kind == "executemany":
            cursor.executemany(statement, params)
        elif kind == "commit":
            conn.commit()
        else:
            conn.rollback()
    cursor.close()


def warm_up_replay(conn, ops: list[tuple]) -> None:
    """Run the request's SELECTs once (untimed): caches of a new connection are warm, as the app's are."""
    cursor = conn.cursor()
    for kind, statement, params in ops:
        if kind == "execute" and statement.lstrip().upper().startswith("SELECT"):
            cursor.execute(statement, params) if params is not None else cursor.execute(statement)
            cursor.fetchall()
    cursor.close()
    conn.rollback()


# --- the benchmark ---------------------------------------------------------------------------------


class Bench:
    """The app, its test client, the S3 server and the database; one method per measurement."""

    def __init__(self, db_spec: str):
        self.workdir = Path(tempfile.mkdtemp(prefix="oarepo-s3-bench-rest-"))
        self.database = Database(db_spec, self.workdir)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        try:
            self._start()
        except BaseException:
            self.moto.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise

    def _start(self) -> None:
        host, port = self.moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        ).create_bucket(Bucket=BUCKET)

        from oarepo_s3.app import create_app
        from oarepo_s3.ratelimit import BUDGETS

        self.app = create_app(
            {
                "SECRET_KEY": "bench-secret",
                "SQLALCHEMY_DATABASE_URI": self.database.uri,
                "S3_ENDPOINT_URL": self.endpoint,
                "S3_ACCESS_KEY_ID": ACCESS_KEY,
                "S3_SECRET_ACCESS_KEY": SECRET_KEY,
                "S3_REGION_NAME": REGION,
                "FILES_REST_STORAGE_FACTORY": "oarepo_s3.storage.s3_storage_factory",
                "TRUSTED_HOSTS": ["localhost"],
                **{setting: None for setting in BUDGETS.values()},  # throughput is measured, not the budgets
            }
        )
        self.created_tables = False
        self._setup_database()
        self.client = self.app.test_client()
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.wsgi_seconds = 0.0
        self._time_wsgi()
        self.att = Attribution()
        install_instrumentation(self.app, self.att)
        self.pending_replays = {op: collections.deque() for op in OPERATIONS}
        self.last_json: dict[str, object] = {}
        self.facts: dict[str, dict] = {}
        self.runs = 0
        self._start_sign_target()

    # set-up

    def _setup_database(self) -> None:
        from invenio_accounts.utils import hash_password
        from invenio_db import db
        from invenio_files_rest.models import Location
        from invenio_oauth2server.models import Token

        from oarepo_s3.drafts import create_draft

        with self.app.app_context():
            if db.engine.dialect.name != "sqlite" and sa.inspect(db.engine).has_table("oarepo_s3_multipart_upload"):
                raise SystemExit(f"{self.database.describe()} already has oarepo-s3's tables: give an empty database")
            db.create_all()
            self.created_tables = True
            db.session.add(Location(name="bench-s3", uri=f"s3://{BUCKET}", default=True))
            datastore = self.app.extensions["security"].datastore
            user = datastore.create_user(email="bench@example.org", password=hash_password("bench pw"), active=True)
            db.session.flush()
            user.confirmed_at = datetime.now(UTC)
            token = Token.create_personal("bench", user.id, scopes=[], is_internal=False)
            db.session.commit()
            self.token = token.access_token
            self.pid = create_draft(user.id, {"title": "bench_rest"}).pid_value
            db.session.remove()

    def _time_wsgi(self) -> None:
        inner = self.app.wsgi_app

        def timed(environ, start_response):
            start = time.perf_counter()
            try:
                return inner(environ, start_response)
            finally:
                self.wsgi_seconds = time.perf_counter() - start

        self.app.wsgi_app = timed

    def _start_sign_target(self) -> None:
        """The in-progress 10,000-part upload whose parts the sign requests re-sign."""
        self.sign_key = "sign-target.bin"
        response = self._post_init(self.sign_key)
        session = response.json["multipart_upload"]
        self.sign_session = session
        body = self._post_sign().json
        self.sign_expires_in = body["expires_in"]

    # requests

    @property
    def files_url(self) -> str:
        return f"{self.app.config['OAREPO_S3_DRAFTS_URL_PREFIX']}/{self.pid}/files/"

    def _post_init(self, key: str):
        response = self.client.post(
            f"{self.files_url}?multipart=True",
            json={"key": key, "size": INIT_PARTS * PART_SIZE, "part_size": PART_SIZE},
            headers=self.headers,
        )
        if response.status_code != 201:
            raise SystemExit(f"init answered {response.status_code}: {response.get_data(as_text=True)[:2000]}")
        return response

    def _post_sign(self, md5: bool = False):
        body: dict = {"parts": list(range(1, SIGN_PARTS + 1))}
        if md5:
            body["content_md5"] = {str(n): digest for n, digest in CONTENT_MD5.items()}
        response = self.client.post(f"{self.files_url}{self.sign_key}/multipart/sign", json=body, headers=self.headers)
        if response.status_code != 200:
            raise SystemExit(f"sign answered {response.status_code}: {response.get_data(as_text=True)[:2000]}")
        return response

    def _delete(self, key: str) -> None:
        response = self.client.delete(f"{self.files_url}{key}", headers=self.headers)
        if response.status_code != 204:
            raise SystemExit(f"DELETE {key} answered {response.status_code}: {response.get_data(as_text=True)[:2000]}")

    def _request(self, operation: str, instrumented: bool) -> dict:
        from invenio_db import db

        copy = None
        if instrumented:
            with self.app.app_context():
                copy = self.database.copy(db.engine)
        self.runs += 1
        key = f"bench-{self.runs:04d}.bin"
        gc.collect()
        self.att.reset()
        self.att.active = instrumented
        start = time.perf_counter()
        try:
            response = self._post_init(key) if operation == "init" else self._post_sign(operation == "sign_md5")
        finally:
            client_seconds = time.perf_counter() - start
            self.att.active = False
        result = {"total": self.wsgi_seconds, "client": client_seconds}
        self._check(operation, response)
        if operation == "init":
            self._delete(key)
        if instrumented:
            result.update(self.att.times)
            result["counts"] = dict(self.att.counts)
            self.facts[operation] = {"counts": dict(self.att.counts), "response_bytes": len(response.get_data())}
            if self.att.json_objects:
                self.last_json[operation] = self.att.json_objects[-1]
            if copy is not None:
                self.pending_replays[operation].append((copy, list(self.att.ops)))
        return result

    def _check(self, operation: str, response) -> None:
        body = response.json
        if operation == "init":
            urls = body["multipart_upload"]["parts_url"]
            if len(urls) != INIT_PARTS or body["multipart_upload"]["num_chunks"] != INIT_PARTS:
                raise SystemExit(f"init answered {len(urls)} part URLs, expected {INIT_PARTS}")
        elif len(body["parts"]) != SIGN_PARTS:
            raise SystemExit(f"sign answered {len(body['parts'])} URLs, expected {SIGN_PARTS}")
        elif operation == "sign_md5" and not all(
            "Content-MD5" in p["url"] or "content-md5" in p["url"] for p in body["parts"]
        ):
            raise SystemExit("sign with content_md5 answered URLs that do not sign Content-MD5")

    # standalone components

    def s3_create(self) -> dict:
        from oarepo_s3.proxies import current_oarepo_s3

        with self.app.app_context():
            s3 = current_oarepo_s3.s3
            key = f"standalone/{uuid.uuid4()}/data"
            gc.collect()
            start = time.perf_counter()
            upload_id = s3.create_multipart_upload(BUCKET, key, "application/octet-stream")
            seconds = time.perf_counter() - start
            s3.abort_multipart_upload(BUCKET, key, upload_id)
        return {"total": seconds}

    def sign_urls(self, parts) -> dict:
        from oarepo_s3.proxies import current_oarepo_s3

        session = self.sign_session
        with self.app.app_context():
            presigner, s3 = current_oarepo_s3.presigner, current_oarepo_s3.s3
            gc.collect()
            start = time.perf_counter()
            urls = presigner.upload_part_urls(
                s3.bucket_name(session["bucket"]),
                session["key"],
                session["upload_id"],
                parts,
                expires_in=self.sign_expires_in,
            )
            seconds = time.perf_counter() - start
        assert len(urls) == len(parts)
        return {"total": seconds}

    def sign_urls_md5(self) -> dict:
        from oarepo_s3.proxies import current_oarepo_s3

        session = self.sign_session
        with self.app.app_context():
            presigner, s3 = current_oarepo_s3.presigner, current_oarepo_s3.s3
            bucket = s3.bucket_name(session["bucket"])
            gc.collect()
            start = time.perf_counter()
            for n, digest in CONTENT_MD5.items():
                presigner.upload_part_url(
                    bucket, session["key"], session["upload_id"], n, expires_in=self.sign_expires_in, content_md5=digest
                )
            seconds = time.perf_counter() - start
        return {"total": seconds}

    def json_dumps(self, operation: str) -> dict:
        obj = self.last_json[operation]
        with self.app.app_context():
            gc.collect()
            start = time.perf_counter()
            text = self.app.json.dumps(obj)
            seconds = time.perf_counter() - start
        return {"total": seconds, "bytes": len(text)}

    def db_replay(self, operation: str) -> dict | None:
        if not self.pending_replays[operation]:
            return None
        copy, ops = self.pending_replays[operation].popleft()
        conn = self.database.connect(copy)
        try:
            warm_up_replay(conn, ops)
            gc.collect()
            start = time.perf_counter()
            replay(conn, ops)
            seconds = time.perf_counter() - start
        finally:
            conn.close()
            self.database.drop(copy)
        return {"total": seconds, "operations": len(ops)}

    def close(self) -> None:
        from invenio_db import db

        for queue in self.pending_replays.values():
            while queue:
                self.database.drop(queue.popleft()[0])
        try:
            self._delete(self.sign_key)
        except SystemExit:
            pass
        with self.app.app_context():
            if self.created_tables and db.engine.dialect.name != "sqlite":
                db.session.remove()
                db.drop_all()
            db.engine.dispose()
        self.moto.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- measuring and reporting -------------------------------------------------------------------------


def measurements(bench: Bench) -> dict[str, Callable[[], dict | None]]:
    """Every timed thing, by name; they run in a rotating order."""
    sign_list = list(range(1, SIGN_PARTS + 1))
    return {
        **{
            f"{op} {mode}": functools.partial(bench._request, op, mode == "instrumented")
            for op in OPERATIONS
            for mode in ("instrumented", "plain")
        },
        "s3 create_multipart_upload": bench.s3_create,
        f"presign {INIT_PARTS} URLs": lambda: bench.sign_urls(range(1, INIT_PARTS + 1)),
        f"presign {SIGN_PARTS} URLs": lambda: bench.sign_urls(sign_list),
        f"presign {SIGN_PARTS} URLs with Content-MD5": bench.sign_urls_md5,
        **{f"json {op} response": functools.partial(bench.json_dumps, op) for op in OPERATIONS},
        **{f"db replay {op}": functools.partial(bench.db_replay, op) for op in OPERATIONS},
    }


def measure(bench: Bench, repeat: int, warmup: int = 2) -> dict[str, list[dict]]:
    tasks = measurements(bench)
    names = list(tasks)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(-warmup, repeat):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            run = tasks[name]()
            if r >= 0 and run is not None:
                results[name].append(run)
    return results


def median(runs: list[dict], field: str) -> float:
    values = [run[field] for run in runs if field in run]
    return statistics.median(values) if values else float("nan")


def breakdown(results: dict[str, list[dict]], operation: str) -> dict:
    """Medians in ms of the instrumented runs; ``other`` closes the sum to the median total."""
    runs = results[f"{operation} instrumented"]
    ms = {field: median(runs, field) * 1e3 for field in ("total", "client", *CATEGORIES)}
    parts = {name: ms[name] for name in ("parse", "hooks", "sign_prep")}
    other = ms["total"] - sum(ms[c] for c in ("s3", "sql", "orm", "sign", "json"))
    parts["rest"] = other - sum(parts.values())
    floor = ms["s3"] + ms["sql"]
    return {
        "total_ms": ms["total"],
        "client_ms": ms["client"],
        "plain_total_ms": median(results[f"{operation} plain"], "total") * 1e3,
        "s3_ms": ms["s3"],
        "db_ms": ms["sql"],
        "orm_ms": ms["orm"],
        "sign_ms": ms["sign"],
        "json_ms": ms["json"],
        "other_ms": other,
        "other_parts_ms": parts,
        "beyond_db_s3_ms": ms["total"] - floor,
        "ratio_to_db_s3": ms["total"] / floor if floor else float("inf"),
        "beyond_db_orm_s3_ms": ms["total"] - floor - ms["orm"],
        "ratio_to_db_orm_s3": ms["total"] / (floor + ms["orm"]) if floor + ms["orm"] else float("inf"),
        "runs": [
            {k: (v * 1e3 if isinstance(v, float) else v) for k, v in run.items()} for run in runs
        ],
        "plain_runs_ms": [run["total"] * 1e3 for run in results[f"{operation} plain"]],
    }


def report(bench: Bench, results: dict[str, list[dict]], repeat: int) -> dict:
    """Print the table, the verdicts and the standalone components; return everything for --json."""
    ops = {op: breakdown(results, op) for op in OPERATIONS}
    standalone = {
        name: {
            "median_ms": median(runs, "total") * 1e3,
            "runs_ms": [run["total"] * 1e3 for run in runs],
            **({"bytes": int(median(runs, "bytes"))} if runs and "bytes" in runs[0] else {}),
            **({"operations": int(median(runs, "operations"))} if runs and "operations" in runs[0] else {}),
        }
        for name, runs in results.items()
        if not name.endswith((" instrumented", " plain"))
    }

    print(
        "REST API of oarepo-s3, driven in-process (Flask test client, no HTTP server; a request's time is\n"
        "its WSGI call). S3: moto {moto} in a thread at {endpoint}; DB: {db}.\n"
        "Medians of {repeat} runs after 2 warm-up rounds, interleaved in a rotating order.\n".format(
            moto=version("moto"), endpoint=bench.endpoint, db=bench.database.describe(), repeat=repeat
        )
    )
    header = (
        f"{'operation':<18}{'total':>8}{'S3':>7}{'DB':>7}{'ORM':>7}{'sign':>7}{'JSON':>7}{'other':>7}"
        f"{'beyond DB+S3':>15}{'ratio':>8}"
    )
    print(header + "\n" + "-" * len(header))
    for op, b in ops.items():
        print(
            f"{LABELS[op]:<18}{b['total_ms']:>8.1f}{b['s3_ms']:>7.1f}{b['db_ms']:>7.1f}{b['orm_ms']:>7.1f}"
            f"{b['sign_ms']:>7.1f}{b['json_ms']:>7.1f}{b['other_ms']:>7.1f}"
            f"{b['beyond_db_s3_ms']:>12.1f} ms{b['ratio_to_db_s3']:>7.1f}x"
        )
    print(
        "(ms. S3: S3Client calls incl. botocore; DB: the driver executing SQL and committing; ORM: SQLAlchemy\n"
        " Session work around it; sign: the presigner; JSON: encoding the response and decoding the body;\n"
        " other: closes each row to its median total, split below into parse (webargs/marshmallow),\n"
        " hooks (before/after_request: OAuth2 token check...), sign_parts (service.sign_parts around the\n"
        " presigner) and rest (Flask, invenio-records/files-rest, serialisers...).\n"
        " beyond DB+S3 = total - S3 - DB; ratio = total / (S3 + DB).)\n"
    )

    for op, b in ops.items():
        c = bench.facts[op]["counts"]
        p = b["other_parts_ms"]
        print(
            f"{LABELS[op]}: {b['total_ms']:.0f} ms total = S3 {b['s3_ms']:.0f} ms + DB {b['db_ms']:.0f} ms"
            f" + ORM {b['orm_ms']:.0f} ms + sign {b['sign_ms']:.0f} ms + JSON {b['json_ms']:.0f} ms"
            f" + other {b['other_ms']:.0f} ms"
        )
        print(
            f"    other {b['other_ms']:.1f} ms = parse {p['parse']:.1f} + hooks {p['hooks']:.1f}"
            f" + sign_parts {p['sign_prep']:.1f} + rest {p['rest']:.1f}"
        )
        print(
            f"    beyond its DB+S3 round trips: {b['beyond_db_s3_ms']:.0f} ms ({b['ratio_to_db_s3']:.1f}x);"
            f" counting the ORM as DB: {b['beyond_db_orm_s3_ms']:.0f} ms ({b['ratio_to_db_orm_s3']:.1f}x)"
        )
        print(
            f"    per request: {c.get('s3 calls', 0)} S3 call(s), {c.get('sql statements', 0)} SQL statements,"
            f" {c.get('sql commit', 0)} commit(s), {c.get('urls signed', 0):,} URLs signed,"
            f" {bench.facts[op]['response_bytes'] / 1e6:.2f} MB answered"
        )
        print(
            f"    uninstrumented: {b['plain_total_ms']:.1f} ms; instrumented, seen by the test client:"
            f" {b['client_ms']:.1f} ms"
        )
        signed = c.get("urls signed", 0)
        parts = INIT_PARTS if op == "init" else SIGN_PARTS
        if signed > parts:
            print(f"    NOTE: {signed:,} URLs signed for {parts:,} parts: "
                  f"each part URL is signed {signed / parts:.1f} times")

    print("\nstandalone components (outside any request, medians):")
    rows = [
        ("s3 create_multipart_upload", "S3 CreateMultipartUpload round trip (then aborted)"),
        *((f"db replay {op}", f"DB replay of {op}'s SQL and commits (raw DBAPI connection)") for op in OPERATIONS),
        (f"presign {INIT_PARTS} URLs", f"presigner.upload_part_urls, {INIT_PARTS:,} parts"),
        (f"presign {SIGN_PARTS} URLs", f"presigner.upload_part_urls, {SIGN_PARTS:,} parts"),
        (f"presign {SIGN_PARTS} URLs with Content-MD5", f"presigner.upload_part_url + Content-MD5, {SIGN_PARTS:,}x"),
        *((f"json {op} response", f"app.json.dumps of the {op} response") for op in OPERATIONS),
    ]
    for name, label in rows:
        s = standalone[name]
        extra = ""
        if "bytes" in s:
            extra = f"  ({s['bytes'] / 1e6:.2f} MB)"
        if "operations" in s:
            extra = f"  ({s['operations']} driver operations)"
        value = f"{'n/a':>8}   " if s["median_ms"] != s["median_ms"] else f"{s['median_ms']:8.2f} ms"
        print(f"  {label:<62}{value}{extra}")
    if bench.database.copy_note:
        print(f"  ({bench.database.copy_note})")
    components = {
        "init": ("s3 create_multipart_upload", "db replay init", f"presign {INIT_PARTS} URLs", "json init response"),
        "sign": ("db replay sign", f"presign {SIGN_PARTS} URLs", "json sign response"),
        "sign_md5": ("db replay sign_md5", f"presign {SIGN_PARTS} URLs with Content-MD5", "json sign_md5 response"),
    }
    floor = {op: sum(standalone[n]["median_ms"] for n in names) for op, names in components.items()}
    print("  each request's components done once, back to back (S3 + DB replay + signing + JSON):")
    for op in OPERATIONS:
        value = "n/a" if floor[op] != floor[op] else f"{floor[op]:.1f} ms"
        print(f"    {LABELS[op]:<18}{value:>10}   vs {ops[op]['total_ms']:.1f} ms as a request")

    return {
        "benchmark": "bench_rest",
        "parts": {"init": INIT_PARTS, "part_size": PART_SIZE, "sign": SIGN_PARTS},
        "repeat": repeat,
        "in_process": True,
        "database": bench.database.kind,
        "database_note": bench.database.copy_note or None,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "versions": {
            pkg: version(pkg)
            for pkg in (
                "flask", "sqlalchemy", "boto3", "botocore", "moto", "invenio-files-rest", "invenio-records-files"
            )
        },
        "operations": {
            op: {**b, "counts": bench.facts[op]["counts"], "response_bytes": bench.facts[op]["response_bytes"]}
            for op, b in ops.items()
        },
        "standalone": standalone,
        "components_sum_ms": floor,
    }


def finite(value):
    """NaN/inf (a measurement that could not run) as null, so that --json writes strict JSON."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, set up, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs of each measurement; medians are reported (default 5)")
    parser.add_argument(
        "--db",
        default="sqlite",
        help="'sqlite' (a temporary file, default) or a PostgreSQL URI of an empty database "
        "(postgresql+psycopg2://user@host:port/db); the benchmark's tables are dropped at the end",
    )
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.db != "sqlite" and not args.db.startswith("postgresql"):
        parser.error("--db must be 'sqlite' or a postgresql:// URI")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    # Known noise of the stack, not of the measurement (oauthlib's URL-encoding
    # override; SQLAlchemy's note on invenio-records' nested transactions).
    warnings.filterwarnings("ignore", message=".*overriding the default OAuthlib.*")
    warnings.filterwarnings("ignore", message=".*nested transaction already deassociated.*")

    started = time.perf_counter()
    bench = Bench(args.db)  # stops what it started if it fails
    try:
        results = measure(bench, args.repeat)
        result = report(bench, results, args.repeat)
    finally:
        bench.close()
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(finite(result), indent=2, default=str, allow_nan=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
