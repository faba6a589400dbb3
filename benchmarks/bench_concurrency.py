"""REST throughput under concurrency: many clients uploading at once to the app under gunicorn.

Run::

    .venv/bin/python benchmarks/bench_concurrency.py [--clients 50] [--uploads 6] [--workers 8]
        [--parts 4] [--pg URI] [--json FILE]

The API app (oarepo_s3.app) under gunicorn (``--workers`` sync workers), PostgreSQL (a
fresh database) and moto's S3 server in its own process. ``--clients``
users, each with a personal token and a draft of their own, upload at the
same time from as many threads; each upload is the real sequence:

1. ``POST <draft>/files/?multipart=True`` (``--parts`` parts of 1 KiB; moto's
   and the app's minimum part size are lowered to 1 KiB);
2. ``POST .../multipart/sign`` for all parts again (a client resuming);
3. the parts PUT straight to S3 (not through the app);
4. ``POST .../complete-multipart`` with the parts' ETags.

Every client first does one upload untimed (warm-up: connections, worker
caches), then all start together on a barrier and do ``--uploads`` uploads
each. Reported: app requests per second over the timed phase, completed
uploads per second, and p50/p99 latency per endpoint (client-side wall
time), plus the CPU seconds each party (gunicorn, PostgreSQL, moto, the
client threads) and every other process on the (shared) machine spent,
which shows where the cores went.
The per-user signing rate limit is off: this measures capacity, not it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datetime import UTC

import common
from common import median, percentile

PART = 1024
ENDPOINTS = ("init", "sign", "s3 put", "complete")


def seed_users(app, count: int) -> list[tuple[str, str]]:
    """``count`` users with a token and a draft each: [(token, draft pid)]."""
    from datetime import datetime

    from invenio_accounts.utils import hash_password
    from invenio_db import db
    from invenio_oauth2server.models import Token

    from oarepo_s3.drafts import create_draft

    out = []
    with app.app_context():
        datastore = app.extensions["security"].datastore
        password = hash_password("bench password")
        for i in range(count):
            user = datastore.create_user(email=f"client{i}@example.org", password=password, active=True)
            db.session.flush()
            user.confirmed_at = datetime.now(UTC)
            token = Token.create_personal(f"client {i}", user.id, scopes=[], is_internal=False)
            db.session.commit()
            out.append((token.access_token, create_draft(user.id, {"title": f"client {i}"}).pid_value))
        db.session.remove()
    return out


class Client(threading.Thread):
    """One user uploading ``uploads`` files, one after another, recording each call's latency."""

    def __init__(self, index: int, base: str, token: str, parts: int, uploads: int, barrier: threading.Barrier):
        super().__init__(daemon=True)
        import requests

        self.index, self.base, self.parts, self.uploads, self.barrier = index, base, parts, uploads, barrier
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {token}"
        self.s3 = requests.Session()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.error: BaseException | None = None
        self.count = 0

    def call(self, name: str, session, method: str, url: str, expect: int, record: bool, **kwargs):
        start = time.perf_counter()
        response = session.request(method, url, timeout=300, **kwargs)
        elapsed = time.perf_counter() - start
        if response.status_code != expect:
            raise RuntimeError(f"{name} {url} answered {response.status_code}: {response.text[:500]}")
        if record:
            self.latency[name].append(elapsed * 1e3)
        return response

    def upload(self, record: bool) -> None:
        self.count += 1
        key = f"c{self.index}-{self.count}.bin"
        body = {"key": key, "size": self.parts * PART, "part_size": PART}
        answer = self.call("init", self.api, "POST", f"{self.base}/files/?multipart=True", 201, record,
                           json=body).json()
        signed = self.call("sign", self.api, "POST", answer["links"]["sign"], 200, record,
                           json={"parts": list(range(1, self.parts + 1))}).json()
        etags = []
        for part in signed["parts"]:
            put = self.call("s3 put", self.s3, "PUT", part["url"], 200, record, data=b"x" * PART)
            etags.append({"PartNumber": part["PartNumber"], "ETag": put.headers["ETag"]})
        done = self.call("complete", self.api, "POST", answer["links"]["complete"], 200, record,
                         json={"parts": etags}).json()
        if done["status"] != "completed" or done["size"] != self.parts * PART:
            raise RuntimeError(f"complete answered {done}")

    def run(self) -> None:
        try:
            self.upload(record=False)
            self.barrier.wait()
            for _ in range(self.uploads):
                self.upload(record=True)
        except BaseException as e:  # reported by the main thread
            self.error = e
            self.barrier.abort()


def main(argv: list[str] | None = None) -> None:
    common.exit_on_sigterm()  # a stopped run still stops its servers
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--uploads", type=int, default=6, help="timed uploads per client (default 6)")
    parser.add_argument("--workers", type=int, default=8,
                        help="gunicorn sync workers (default 8: 4 a core, as requests wait on S3 and the database)")
    parser.add_argument("--parts", type=int, default=4, help="parts per upload (default 4)")
    parser.add_argument("--pg", help="PostgreSQL server URI (default: start one)")
    parser.add_argument("--json", type=Path, help="result file (default benchmarks/results/concurrency.json)")
    args = parser.parse_args(argv)

    common.quiet()
    pg = common.postgres_from_args(args.pg)
    s3 = common.start_moto(min_part_size=PART)
    server = None
    try:
        db_uri = pg.database("bench_concurrency")
        bucket = common.new_bucket(s3)
        config = common.app_config(db_uri, s3, OAREPO_S3_MIN_PART_SIZE=PART, OAREPO_S3_SIGN_RATE_LIMIT=None,
                                   SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 5, "max_overflow": 5})
        from oarepo_s3.app import create_app

        app = create_app(config)
        common.seed(app, bucket)
        users = seed_users(app, args.clients)
        server = common.start_gunicorn(config, workers=args.workers)
        prefix = f"{server.url}{app.config['OAREPO_S3_DRAFTS_URL_PREFIX']}"

        barrier = threading.Barrier(args.clients + 1)
        clients = [Client(i, f"{prefix}/{pid}", token, args.parts, args.uploads, barrier)
                   for i, (token, pid) in enumerate(users)]
        for c in clients:
            c.start()
        print(f"  {args.clients} clients warming up ...", file=sys.stderr)
        try:
            barrier.wait(timeout=600)
        except threading.BrokenBarrierError:
            pass
        errors = [c.error for c in clients if c.error]
        if errors:
            raise SystemExit(f"{len(errors)} clients failed during the warm-up; first: {errors[0]}")
        meters = {"app (gunicorn)": server.cpu().start(), "PostgreSQL": pg.cpu().start(), "S3 (moto)": s3.cpu().start()}
        machine = common.MachineMeter().start()
        own = resource.getrusage(resource.RUSAGE_SELF)
        print(f"  {args.clients} clients x {args.uploads} uploads ...", file=sys.stderr)
        started = time.perf_counter()
        for c in clients:
            c.join()
        wall = time.perf_counter() - started
        cpu = {name: m.read() for name, m in meters.items()}
        end = resource.getrusage(resource.RUSAGE_SELF)
        cpu["clients (this process)"] = end.ru_utime + end.ru_stime - own.ru_utime - own.ru_stime
        cpu["other processes on the machine"] = max(0.0, machine.read() - sum(cpu.values()))
        errors = [c.error for c in clients if c.error]
        if errors:
            raise SystemExit(f"{len(errors)} clients failed; first: {errors[0]}")
    finally:
        if server is not None:
            server.stop()
        s3.stop()
        pg.stop()

    latency = {name: [ms for c in clients for ms in c.latency[name]] for name in ENDPOINTS}
    app_requests = sum(len(latency[n]) for n in ("init", "sign", "complete"))
    uploads = args.clients * args.uploads
    endpoints = {
        name: {"count": len(v), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "mean_ms": sum(v) / len(v),
               "max_ms": max(v), "per_second": len(v) / wall}
        for name, v in latency.items()
    }
    print(f"\n{args.clients} concurrent clients, {uploads} uploads of {args.parts} parts; gunicorn {args.workers} sync "
          f"workers, PostgreSQL, moto; {wall:.1f} s")
    print(f"app requests/s: {app_requests / wall:.1f}   uploads/s: {uploads / wall:.1f}")
    print(f"{'endpoint':<10}{'count':>7}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, e in endpoints.items():
        print(f"{name:<10}{e['count']:>7}{e['per_second']:>8.1f}{e['p50_ms']:>9.1f}{e['p99_ms']:>9.1f}{e['max_ms']:>9.1f}")
    print("CPU seconds during the timed phase: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
          + f" (of {wall * (common.os.cpu_count() or 1):.1f} available on {common.os.cpu_count()} cores)")
    common.write_result("concurrency", {
        "clients": args.clients, "uploads_per_client": args.uploads, "parts": args.parts, "part_size": PART,
        "workers": args.workers, "wall_s": wall, "app_requests": app_requests,
        "app_requests_per_s": app_requests / wall, "uploads_per_s": uploads / wall,
        "endpoints": endpoints, "cpu_s": cpu, "median_latency_ms": {n: median(v) for n, v in latency.items()},
        "versions": common.package_versions("gunicorn", "moto", "psycopg2-binary"),
    }, args.json)


if __name__ == "__main__":
    main()
