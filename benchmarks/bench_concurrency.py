"""REST throughput under concurrency: many clients uploading at once to the app under gunicorn.

Run::

    .venv/bin/python benchmarks/bench_concurrency.py [--clients 50] [--uploads 6] [--workers 8]
        [--parts 10] [--pg URI] [--json FILE]

The API app (oarepo_s3.app) under gunicorn (``--workers`` sync workers), PostgreSQL (a
fresh database) and moto's S3 server in its own process. ``--clients``
users, each with a personal token and a draft of their own, upload at the
same time from as many threads; each upload is the real sequence, after
one request to the baseline endpoint:

0. ``GET /_bench/baseline/<draft>``: the floor of any authenticated Invenio
   endpoint (bearer token, one ORM read, a small JSON answer; see ``wsgi.py``);
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

**The control plane: app CPU per request type.** Each worker measures the
CPU of every init, sign, complete and baseline request itself (thread CPU
time around the WSGI call, ``wsgi.CpuByRoute``); the benchmark reads every
worker's totals before and after the timed phase. Measured inside the
worker, each request's CPU belongs to exactly its type, in the same mixed
load as the latencies; a phase per type read from the outside
(the process group's CPU) would also charge gunicorn's arbiter, idle
workers and each phase's ramp to the type, and need inits before every
sign phase. What the per-request figures leave out (gunicorn reading and
writing the HTTP messages, the arbiter) is shown as the difference to
the process group's total. Reported: CPU ms per request of each type and
its ratio to the baseline's (target: init of ``--parts`` parts, sign
and complete each at most 2x the baseline).
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
ENDPOINTS = ("baseline", "init", "sign", "s3 put", "complete")
CONTROL = ("init", "sign", "complete", "baseline")
"""Request types whose app CPU is measured in the workers (``wsgi.ROUTES``)."""
COMPONENTS = ("auth", "s3", "sql")
"""Parts of each request's CPU the workers measure apart (``wsgi.COMPONENTS``)."""
TARGET_VS_BASELINE = 2.0


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

    def __init__(self, index: int, base: str, baseline: str, token: str, parts: int, uploads: int,
                 barrier: threading.Barrier):
        super().__init__(daemon=True)
        import requests

        self.index, self.base, self.parts, self.uploads, self.barrier = index, base, parts, uploads, barrier
        self.baseline = baseline
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
        self.call("baseline", self.api, "GET", self.baseline, 200, record)
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
            self.barrier.wait()  # warmed up: the benchmark reads its meters...
            self.barrier.wait()  # ...and lets everyone go
            for _ in range(self.uploads):
                self.upload(record=True)
        except BaseException as e:  # reported by the main thread
            self.error = e
            self.barrier.abort()


def worker_cpu(server, workers: int) -> dict[int, dict[str, dict[str, float]]]:
    """Every worker's CPU totals by request type (``GET /_bench/cpu``): {pid: {type: totals}}.

    A sync worker answers one request at a time, so concurrent asks reach
    different workers; asked again until every one of gunicorn's workers has answered.
    """
    from concurrent.futures import ThreadPoolExecutor

    import requests

    wanted = set(common.children_of(server.process.pid))
    seen: dict[int, dict[str, dict[str, float]]] = {}
    deadline = time.monotonic() + 120
    while not wanted <= set(seen) and time.monotonic() < deadline:
        with ThreadPoolExecutor(4 * workers) as pool:
            for answer in pool.map(lambda _: requests.get(f"{server.url}/_bench/cpu", timeout=60).json(),
                                   range(4 * workers)):
                seen[answer["pid"]] = answer["routes"]
    if not wanted <= set(seen):
        raise SystemExit(f"only {len(set(seen) & wanted)} of {len(wanted)} gunicorn workers reported their CPU")
    return seen


def route_cpu(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Totals by request type over all workers between two readings."""
    out: dict[str, dict[str, float]] = {}
    for pid, routes in after.items():
        for name, t in routes.items():
            was = before.get(pid, {}).get(name, {})
            o = out.setdefault(name, dict.fromkeys(t, 0))
            for k in t:
                o[k] = o.get(k, 0) + t[k] - was.get(k, 0)
    return out


def control_plane(per_route: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """CPU and wall ms per request of each control request type, and the CPU ratio to the baseline's."""
    out = {}
    for name in CONTROL:
        t = per_route.get(name, {"count": 0})
        n = t["count"] or float("nan")
        out[name] = {"count": t["count"], **{f"{k.removesuffix('_s')}_ms": t.get(k, 0.0) / n * 1e3
                                             for k in ("cpu_s", "gc_s", "wall_s", *(f"{c}_s" for c in COMPONENTS))}}
        out[name]["rest_ms"] = out[name]["cpu_ms"] - sum(out[name][f"{c}_ms"] for c in COMPONENTS)
    base = out["baseline"]["cpu_ms"]
    for c in out.values():
        c["vs_baseline"] = c["cpu_ms"] / base
    return out


def main(argv: list[str] | None = None) -> None:
    common.exit_on_sigterm()  # a stopped run still stops its servers
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--uploads", type=int, default=6, help="timed uploads per client (default 6)")
    parser.add_argument("--workers", type=int, default=8,
                        help="gunicorn sync workers (default 8: 4 a core, as requests wait on S3 and the database)")
    parser.add_argument("--parts", type=int, default=10, help="parts per upload (default 10)")
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
        clients = [Client(i, f"{prefix}/{pid}", f"{server.url}/_bench/baseline/{pid}", token, args.parts, args.uploads,
                          barrier)
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
            barrier.abort()
            raise SystemExit(f"{len(errors)} clients failed during the warm-up; first: {errors[0]}")
        workers_before = worker_cpu(server, args.workers)
        print(f"  {args.clients} clients x {args.uploads} uploads ...", file=sys.stderr)
        meters = {"app (gunicorn)": server.cpu().start(), "PostgreSQL": pg.cpu().start(), "S3 (moto)": s3.cpu().start()}
        machine = common.MachineMeter().start()
        own = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        for c in clients:
            c.join()
        wall = time.perf_counter() - started
        cpu = {name: m.read() for name, m in meters.items()}
        end = resource.getrusage(resource.RUSAGE_SELF)
        per_route = route_cpu(workers_before, worker_cpu(server, args.workers))
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
    app_requests = sum(len(latency[n]) for n in ("baseline", "init", "sign", "complete"))
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
    control = control_plane(per_route)
    in_requests = sum(t["cpu_s"] for t in per_route.values())
    print(f"\napp CPU per request (measured in the workers; init plans {args.parts} parts):")
    print(f"{'request':<10}{'count':>7}{'CPU ms':>9}{'vs baseline':>13}   of it: {'auth':>6}{'S3':>6}{'SQL':>6}"
          f"{'rest':>6}{'GC':>6}{'wall ms':>9}")
    for name, c in control.items():
        print(f"{name:<10}{c['count']:>7}{c['cpu_ms']:>9.2f}{c['vs_baseline']:>12.2f}x   {'':7}"
              + "".join(f"{c[k]:>6.2f}" for k in ("auth_ms", "s3_ms", "sql_ms", "rest_ms", "gc_ms"))
              + f"{c['wall_ms']:>9.1f}")
    print("(auth: invenio-oauth2server's token check, flask-login, invenio-access's identity, with their queries; "
          "S3: the control calls through botocore; SQL: the database driver; rest: Flask, the ORM, Invenio's "
          "models and ours)")
    print(f"in these requests: {in_requests:.1f} CPU s of the app's {cpu['app (gunicorn)']:.1f} (the rest: gunicorn "
          "around the requests, its arbiter)")
    common.write_result("concurrency", {
        "clients": args.clients, "uploads_per_client": args.uploads, "parts": args.parts, "part_size": PART,
        "workers": args.workers, "wall_s": wall, "app_requests": app_requests,
        "app_requests_per_s": app_requests / wall, "uploads_per_s": uploads / wall,
        "endpoints": endpoints, "cpu_s": cpu, "median_latency_ms": {n: median(v) for n, v in latency.items()},
        "control_plane": control, "control_plane_cpu_s": in_requests, "target_vs_baseline": TARGET_VS_BASELINE,
        "versions": common.package_versions("gunicorn", "moto", "psycopg2-binary"),
    }, args.json)


if __name__ == "__main__":
    main()
