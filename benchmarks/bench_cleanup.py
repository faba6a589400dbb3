"""Time and peak memory of the expiry cleanup over 1,000 and 10,000 expired uploads.

Run::

    .venv/bin/python benchmarks/bench_cleanup.py [--counts 1000,10000] [--db URI] [--json FILE]

For each count, on an embedded S3 (moto's server in a separate process on
127.0.0.1, so its CPU and memory are not counted) and
SQLite in a temporary directory (or ``--db``, e.g. a PostgreSQL URI: its
tables are dropped and created anew):

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

The table shows the run's wall time, sessions per second, the part spent
inside S3 AbortMultipartUpload calls, the RSS growth during the run (and
the peak Python heap above the baseline). Flat memory means neither grows
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
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

import boto3  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from botocore.config import Config  # noqa: E402
from flask import Flask  # noqa: E402
from invenio_db import db  # noqa: E402
from invenio_files_rest.models import Bucket, FileInstance, Location, ObjectVersion  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oarepo_s3.api import MultipartUploadStatus  # noqa: E402
from oarepo_s3.cleanup import run_cleanup  # noqa: E402
from oarepo_s3.models import MultipartUploadSession, utcnow  # noqa: E402
from oarepo_s3.proxies import current_oarepo_s3  # noqa: E402

FILE_SIZE = 1000
PER_BUCKET = 10
MiB = 1024 * 1024


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process, so that neither its CPU time nor its heap is counted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto's S3 server did not start")


def make_app(db_uri: str, s3_url: str) -> Flask:
    from demo.app import create_minimal_app

    return create_minimal_app(dict(
        SECRET_KEY="bench",
        SQLALCHEMY_DATABASE_URI=db_uri,
        SQLALCHEMY_TRACK_MODIFICATIONS=False,
        FILES_REST_STORAGE_FACTORY="oarepo_s3.storage.s3_storage_factory",
        S3_ENDPOINT_URL=s3_url,
        S3_ACCESS_KEY_ID="bench",
        S3_SECRET_ACCESS_KEY="bench",
        S3_REGION_NAME="us-east-1",
        OAREPO_S3_ORPHAN_SWEEP=False,
    ), "bench_cleanup")


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
            {"version_id": v, "bucket_id": bucket_ids[i // PER_BUCKET], "key": f"f{i:06d}.bin", "file_id": file_ids[i], "is_head": True}
            for v, i in zip(version_ids, chunk)])
        db.session.execute(sa.insert(MultipartUploadSession), [
            {"id": uuid.uuid4(), "bucket_id": bucket_ids[i // PER_BUCKET], "version_id": v, "file_id": file_ids[i],
             "key": f"f{i:06d}.bin", "s3_bucket": s3_bucket, "s3_key": keys[i], "upload_id": upload_ids[i],
             "content_type": "application/octet-stream", "size": FILE_SIZE, "part_size": 5 * MiB, "num_parts": 1,
             "expires": expired + timedelta(milliseconds=i), "status": MultipartUploadStatus.IN_PROGRESS}
            for v, i in zip(version_ids, chunk)])
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


def measure(app: Flask, client, count: int, trace: bool, file_id_index: bool) -> dict:
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
        gc.collect()
        sampler = RssSampler()
        sampler.start()
        if trace:
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        try:
            report = run_cleanup(limit=count + 1)
        finally:
            seconds = time.perf_counter() - started
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
            "peak_heap_bytes": heap,
            "rss_growth_bytes": rss_growth,
            "s3_setup_seconds": round(s3_setup, 3),
        }


def print_table(rows: list[dict], database: str, trace: bool, file_id_index: bool) -> None:
    extra = (", tracemalloc on" if trace else "") + (", index on files_object.file_id" if file_id_index else "")
    print(f"\nexpiry cleanup on moto + {database} (Python {platform.python_version()}, {os.cpu_count()} cores{extra})\n")
    header = f"{'sessions':>9} | {'time s':>7} | {'sessions/s':>10} | {'in S3 abort s':>13} | " \
             f"{'peak heap MiB':>13} | {'RSS growth MiB':>14} | {'S3 setup s':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        heap = "-" if r["peak_heap_bytes"] is None else f"{r['peak_heap_bytes'] / MiB:.2f}"
        print(f"{r['count']:>9,} | {r['seconds']:>7.2f} | {r['per_second']:>10.0f} | {r['s3_abort_seconds']:>13.2f} | "
              f"{heap:>13} | {r['rss_growth_bytes'] / MiB:>14.2f} | {r['s3_setup_seconds']:>10.2f}")
    if len(rows) > 1:
        grow = rows[-1]["count"] / rows[0]["count"]
        measures = [("RSS growth", "rss_growth_bytes")] + ([("peak heap", "peak_heap_bytes")] if trace else [])
        for label, field in measures:
            first, last = rows[0][field], rows[-1][field]
            print(f"\n{label}: {last / MiB:.2f} MiB at {rows[-1]['count']:,} sessions, {first / MiB:.2f} MiB at "
                  f"{rows[0]['count']:,} ({grow:.0f}x the sessions): "
                  f"{'flat' if last < max(1.5 * first, first + 2 * MiB) else 'NOT flat'}", end="")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--counts", default="1000,10000", help="backlog sizes (default 1000,10000)")
    parser.add_argument("--db", help="database URI (default: SQLite in a temporary directory); tables are recreated")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace the Python heap's peak (precise, but the run takes ~2.5x as long)")
    parser.add_argument("--file-id-index", action="store_true",
                        help="first create an index on files_object.file_id (files-rest has none)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    trace = args.tracemalloc

    server, s3_url = start_moto()
    with tempfile.TemporaryDirectory(prefix="bench-cleanup-") as tmp:
        db_uri = args.db or f"sqlite:///{tmp}/bench.db"
        app = make_app(db_uri, s3_url)
        database = sa.engine.make_url(db_uri).get_backend_name()
        client = s3_client(s3_url)
        try:
            rows = [measure(app, client, count, trace, args.file_id_index) for count in counts]
        finally:
            with app.app_context():
                db.session.remove()
                db.drop_all()
            server.terminate()
            server.wait(10)
    print_table(rows, database, trace, args.file_id_index)
    result = {
        "benchmark": "cleanup",
        "database": database,
        "tracemalloc": trace,
        "files_object_file_id_index": args.file_id_index,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": {p: version(p) for p in ("moto", "boto3", "sqlalchemy", "invenio-files-rest")},
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
