"""Time and peak memory of the expiry cleanup over 1,000 and 10,000 expired uploads.

Run::

    .venv/bin/python benchmarks/bench_cleanup.py [--counts 1000,10000] [--db sqlite|postgresql|URI]
        [--pg URI] [--json FILE]

For each count, on an embedded S3 (moto's server in a separate process on
127.0.0.1, so its CPU and memory are not counted) and
SQLite in a temporary directory (or, with ``--db postgresql``, a fresh
database on the PostgreSQL server ``--pg`` names, or on one it starts):

1. creates that many real S3 multipart uploads with a thread pool (timed
   apart, as "S3 setup");
2. inserts their books in bulk: a pending FileInstance, ObjectVersion and
   upload session each, all expired, ten to a bucket (like records with a
   few files each), the buckets' sizes counting them;
3. runs :func:`oarepo_s3.cleanup.run_cleanup` (the Celery task's body) once,
   with a thread sampling the process RSS (and, with ``--tracemalloc``,
   ``tracemalloc`` tracing the Python heap), and checks afterwards that
   every session is expired, S3 holds no upload and the buckets' sizes are
   back to 0.

The table shows the run's wall time, sessions per second, and where the
time went: inside S3 AbortMultipartUpload calls (moto included), in the
database driver executing statements, in its commits, and the rest (the ORM,
files-rest, botocore: Python in this process); this process's CPU seconds
and moto's; the RSS growth during the run (and the peak Python heap above
the baseline). Flat memory means neither grows
with the count: one row is in flight at a time and no list of ids is built.
``tracemalloc`` slows the ORM-heavy run down ~2.5x, so it is off unless asked
for; the times it shows are then not comparable.

On PostgreSQL, deleting a FileInstance checks the ``files_object.file_id``
foreign key, and files-rest's schema has no index on that column: every
expired upload then scans the whole ``files_object`` table, which makes a
run quadratic in the number of objects. ``--file-id-index`` creates that
index first, to show the difference.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")

import boto3
import sqlalchemy as sa
from botocore.config import Config
from flask import Flask
from invenio_db import db
from invenio_files_rest.models import Bucket, FileInstance, Location, ObjectVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from oarepo_s3.api import MultipartUploadStatus
from oarepo_s3.cleanup import run_cleanup
from oarepo_s3.models import MultipartUploadSession, utcnow
from oarepo_s3.proxies import current_oarepo_s3

FILE_SIZE = 1000
PER_BUCKET = 10
MiB = 1024 * 1024


def make_app(db_uri: str, s3_url: str) -> Flask:
    from oarepo_s3.app import create_app

    return create_app(dict(
        SECRET_KEY="bench",
        SQLALCHEMY_DATABASE_URI=db_uri,
        SQLALCHEMY_TRACK_MODIFICATIONS=False,
        FILES_REST_STORAGE_FACTORY="oarepo_s3.storage.s3_storage_factory",
        S3_ENDPOINT_URL=s3_url,
        S3_ACCESS_KEY_ID="bench",
        S3_SECRET_ACCESS_KEY="bench-secret",
        S3_REGION_NAME="us-east-1",
        OAREPO_S3_ORPHAN_SWEEP=False,
    ), name="bench_cleanup", rest_api=False)


def s3_client(s3_url: str):
    return boto3.client(
        "s3", endpoint_url=s3_url, region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=32,
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )


def build_backlog(client, count: int, file_id_index: bool) -> tuple[str, float]:
    """``count`` expired uploads: real ones in S3, their books inserted in bulk. Returns (bucket, S3 seconds)."""
    s3_bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=s3_bucket)
    db.drop_all()
    db.create_all()
    if file_id_index:
        db.session.execute(sa.text("CREATE INDEX ix_files_object_file_id ON files_object (file_id)"))
    location = Location(name="bench", uri=f"s3://{s3_bucket}", default=True)
    db.session.add(location)
    db.session.commit()
    # Like records with a few files each: PER_BUCKET pending uploads in each bucket.
    bucket_ids = [uuid.uuid4() for _ in range(0, count, PER_BUCKET)]
    for start in range(0, len(bucket_ids), 1000):
        db.session.execute(sa.insert(Bucket), [
            {"id": b, "default_location": location.id, "default_storage_class": "S",
             "size": min(PER_BUCKET, count - i * PER_BUCKET) * FILE_SIZE, "locked": False, "deleted": False}
            for i, b in enumerate(bucket_ids[start:start + 1000], start=start)])
    db.session.commit()

    file_ids = [uuid.uuid4() for _ in range(count)]
    keys = [f"{str(f)[:2]}/{str(f)[2:4]}/{str(f)[4:]}/data" for f in file_ids]
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        upload_ids = list(pool.map(
            lambda key: client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"], keys))
    s3_seconds = time.perf_counter() - started

    expired = utcnow() - timedelta(hours=1)
    for start in range(0, count, 1000):
        chunk = range(start, min(start + 1000, count))
        version_ids = [uuid.uuid4() for _ in chunk]
        db.session.execute(sa.insert(FileInstance), [
            {"id": file_ids[i], "uri": f"s3://{s3_bucket}/{keys[i]}", "size": FILE_SIZE, "readable": False,
             "writable": False, "storage_class": "S"} for i in chunk])
        db.session.execute(sa.insert(ObjectVersion), [
            {"version_id": v, "bucket_id": bucket_ids[i // PER_BUCKET], "key": f"f{i:06d}.bin", "file_id": file_ids[i],
             "is_head": True}
            for v, i in zip(version_ids, chunk, strict=True)])
        db.session.execute(sa.insert(MultipartUploadSession), [
            {"id": uuid.uuid4(), "bucket_id": bucket_ids[i // PER_BUCKET], "version_id": v, "file_id": file_ids[i],
             "key": f"f{i:06d}.bin", "s3_bucket": s3_bucket, "s3_key": keys[i], "upload_id": upload_ids[i],
             "content_type": "application/octet-stream", "size": FILE_SIZE, "part_size": 5 * MiB, "num_parts": 1,
             "expires": expired + timedelta(milliseconds=i), "status": MultipartUploadStatus.IN_PROGRESS}
            for v, i in zip(version_ids, chunk, strict=True)])
        db.session.commit()
    return s3_bucket, s3_seconds


class RssSampler(threading.Thread):
    """Samples this process's resident set size every few milliseconds; keeps the peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = self.start_rss = rss()
        self._done = threading.Event()

    def run(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, rss())

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak - self.start_rss


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def statement_kind(statement: str) -> str:
    """``DELETE files_files``, ``SELECT oarepo_s3_multipart_upload``...: the verb and the first table."""
    words = statement.replace('"', "").split()
    verb = words[0].upper() if words else "?"
    marker = {"SELECT": "FROM", "DELETE": "FROM", "INSERT": "INTO", "UPDATE": "UPDATE"}.get(verb)
    if marker is None:
        return verb
    upper = [w.upper() for w in words]
    table = words[upper.index(marker) + 1] if marker in upper[:-1] else "?"
    return f"{verb} {table.strip('(),')}"


class SqlTimer:
    """Wall time the database driver spends executing statements and committing, and the statement count."""

    def __init__(self, engine):
        self.engine, self.execute, self.commit, self.statements = engine, 0.0, 0.0, 0
        self.by_kind: dict[str, list] = {}
        self._started: dict[int, float] = {}
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        self.dialect = engine.dialect
        real_commit = self.dialect.do_commit

        def do_commit(connection):
            t = time.perf_counter()
            try:
                return real_commit(connection)
            finally:
                self.commit += time.perf_counter() - t

        self.dialect.do_commit = do_commit

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        elapsed = time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())
        self.execute += elapsed
        self.statements += 1
        kind = self.by_kind.setdefault(statement_kind(statement), [0, 0.0])
        kind[0] += 1
        kind[1] += elapsed

    def slowest(self, sessions: int, n: int = 4) -> list[dict]:
        """The statement kinds that took the most time: per session, count and ms."""
        top = sorted(self.by_kind.items(), key=lambda kv: -kv[1][1])[:n]
        return [{"statement": k, "per_session": round(c / sessions, 2), "ms_per_session": round(t / sessions * 1e3, 3),
                 "ms_each": round(t / c * 1e3, 3)} for k, (c, t) in top]

    def remove(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._before)
        sa.event.remove(self.engine, "after_cursor_execute", self._after)
        del self.dialect.do_commit


def measure(app: Flask, client, count: int, trace: bool, file_id_index: bool, s3_server, db_server) -> dict:
    with app.app_context():
        s3_bucket, s3_setup = build_backlog(client, count, file_id_index)
        s3 = current_oarepo_s3.s3
        abort_seconds = [0.0]
        real_abort = s3.abort_multipart_upload

        def timed_abort(*args, **kwargs):
            t = time.perf_counter()
            try:
                return real_abort(*args, **kwargs)
            finally:
                abort_seconds[0] += time.perf_counter() - t

        s3.abort_multipart_upload = timed_abort
        sql = SqlTimer(db.engine)
        gc.collect()
        sampler = RssSampler()
        sampler.start()
        if trace:
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
        meters = {"s3_server_cpu_seconds": s3_server.cpu().start()}
        if db_server is not None:
            meters["db_server_cpu_seconds"] = db_server.cpu().start()
        machine = common.MachineMeter().start()
        cpu_started = time.process_time()
        started = time.perf_counter()
        try:
            report = run_cleanup(limit=count + 1)
        finally:
            seconds = time.perf_counter() - started
            own_cpu = time.process_time() - cpu_started
            servers_cpu = {name: round(m.read(), 3) for name, m in meters.items()}
            servers_cpu["machine_cpu_seconds"] = round(machine.read(), 3)
            sql.remove()
            heap = None
            if trace:
                heap = tracemalloc.get_traced_memory()[1] - baseline
                tracemalloc.stop()
            rss_growth = sampler.stop()
            del s3.abort_multipart_upload

        left = db.session.query(MultipartUploadSession).filter_by(status=MultipartUploadStatus.IN_PROGRESS).count()
        bucket_size = db.session.query(sa.func.sum(Bucket.size)).scalar()
        in_s3 = len(client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []))
        db.session.commit()
        if (report.expired, report.failures, left, in_s3, bucket_size) != (count, 0, 0, 0, 0):
            raise SystemExit(f"cleanup of {count} went wrong: {report}, {left} left in progress, "
                             f"{in_s3} uploads left in S3, bucket size {bucket_size}")
        return {
            "count": count,
            "seconds": round(seconds, 3),
            "per_second": round(count / seconds, 1),
            "s3_abort_seconds": round(abort_seconds[0], 3),
            "sql_execute_seconds": round(sql.execute, 3),
            "sql_commit_seconds": round(sql.commit, 3),
            "sql_statements_per_session": round(sql.statements / count, 1),
            "sql_slowest": sql.slowest(count),
            "sql_by_statement": sql.slowest(count, n=len(sql.by_kind)),
            "other_seconds": round(seconds - abort_seconds[0] - sql.execute - sql.commit, 3),
            "process_cpu_seconds": round(own_cpu, 3),
            **servers_cpu,
            "peak_heap_bytes": heap,
            "rss_growth_bytes": rss_growth,
            "peak_rss_bytes": sampler.peak,
            "s3_setup_seconds": round(s3_setup, 3),
        }


def print_table(rows: list[dict], database: str, trace: bool, file_id_index: bool) -> None:
    extra = (", tracemalloc on" if trace else "") + (", index on files_object.file_id" if file_id_index else "")
    print(f"\nexpiry cleanup on moto + {database} "
          f"(Python {platform.python_version()}, {os.cpu_count()} cores{extra})\n")
    header = (f"{'sessions':>9} | {'time s':>7} | {'per s':>6} | {'S3 abort s':>10} | {'SQL s':>6} | {'commit s':>8} | "
              f"{'rest s':>7} | {'own CPU s':>9} | {'moto CPU s':>10} | {'DB CPU s':>8} | {'SQL/session':>11} | "
              f"{'RSS growth MiB':>14} | {'heap MiB':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        heap = "-" if r["peak_heap_bytes"] is None else f"{r['peak_heap_bytes'] / MiB:.2f}"
        print(f"{r['count']:>9,} | {r['seconds']:>7.2f} | {r['per_second']:>6.0f} | {r['s3_abort_seconds']:>10.2f} | "
              f"{r['sql_execute_seconds']:>6.2f} | {r['sql_commit_seconds']:>8.2f} | {r['other_seconds']:>7.2f} | "
              f"{r['process_cpu_seconds']:>9.2f} | {r['s3_server_cpu_seconds']:>10.2f} | "
              f"{r.get('db_server_cpu_seconds', float('nan')):>8.2f} | "
              f"{r['sql_statements_per_session']:>11} | {r['rss_growth_bytes'] / MiB:>14.2f} | {heap:>8}")
    for r in rows:
        print(f"{r['count']:>9,}: slowest SQL per session: " + "; ".join(
            f"{s['statement']} x{s['per_session']:g} {s['ms_per_session']:.2f} ms" for s in r["sql_slowest"]))
    print("(S3 abort: inside AbortMultipartUpload calls, moto included; SQL: the driver executing statements;\n"
          " commit: the driver's commits; rest: everything else (ORM, files-rest, botocore); own CPU: this\n"
          " process's CPU seconds; moto CPU: the S3 server's; DB CPU: PostgreSQL's, nan on SQLite.)")
    if len(rows) > 1:
        grow = rows[-1]["count"] / rows[0]["count"]
        measures = [("RSS growth", "rss_growth_bytes")] + ([("peak heap", "peak_heap_bytes")] if trace else [])
        for label, field in measures:
            first, last = rows[0][field], rows[-1][field]
            print(f"\n{label}: {last / MiB:.2f} MiB at {rows[-1]['count']:,} sessions, {first / MiB:.2f} MiB at "
                  f"{rows[0]['count']:,} ({grow:.0f}x the sessions): "
                  f"{'flat' if last < max(1.5 * first, first + 2 * MiB) else 'NOT flat'}", end="")
        print()


def main(argv: list[str] | None = None) -> None:
    common.exit_on_sigterm()  # a stopped run still stops its servers
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--counts", default="1000,10000", help="backlog sizes (default 1000,10000)")
    parser.add_argument("--db", default="sqlite",
                        help="'sqlite' (a temporary file, default), 'postgresql' (a fresh database on --pg's server, "
                             "or on one started for the run) or a database URI (its tables are dropped and recreated)")
    parser.add_argument("--pg", help="PostgreSQL server URI for --db postgresql (default: start one)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace the Python heap's peak (precise, but the run takes ~2.5x as long)")
    parser.add_argument("--file-id-index", action="store_true",
                        help="first create an index on files_object.file_id (files-rest has none)")
    parser.add_argument("--json", type=Path, help="result file (default benchmarks/results/cleanup-<db>.json)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    trace = args.tracemalloc

    common.quiet()
    kind = args.db if args.db in ("sqlite", "postgresql") else sa.engine.make_url(args.db).get_backend_name()
    s3_server = pg = None
    try:
        s3_server = common.start_moto()
        if args.db == "postgresql":
            pg = common.postgres_from_args(args.pg)
        elif kind == "postgresql":
            pg = common.Postgres(args.db, common.postmaster_pid(args.db))  # not ours: never stopped
        with tempfile.TemporaryDirectory(prefix="bench-cleanup-") as tmp:
            if args.db == "sqlite":
                db_uri = f"sqlite:///{tmp}/bench.db"
            elif args.db == "postgresql":
                db_uri = pg.database("bench_cleanup")
            else:
                db_uri = args.db
            app = make_app(db_uri, s3_server.endpoint)
            client = s3_server.client()
            try:
                rows = []
                for count in counts:
                    print(f"  {count} expired sessions on {kind} ...", file=sys.stderr)
                    rows.append(measure(app, client, count, trace, args.file_id_index, s3_server, pg))
            finally:
                with app.app_context():
                    db.session.remove()
                    db.drop_all()
                    db.engine.dispose()
    finally:
        if s3_server is not None:
            s3_server.stop()
        if pg is not None:
            pg.stop()
    print_table(rows, kind, trace, args.file_id_index)
    common.write_result(f"cleanup-{kind}", {
        "database": kind,
        "tracemalloc": trace,
        "files_object_file_id_index": args.file_id_index,
        "versions": common.package_versions("moto", "boto3", "sqlalchemy", "invenio-files-rest", "psycopg2-binary"),
        "rows": rows,
    }, args.json)


if __name__ == "__main__":
    main()
