"""How the REST API's init, re-sign, complete and file list scale with part count and file count.

Run::

    .venv/bin/python benchmarks/bench_scale.py [--parts 10,1000,10000] [--files 10,100,1000]
        [--repeat 5] [--pg URI] [--json FILE]

Real HTTP: the API app (oarepo_s3.app) under gunicorn (one worker, four threads), on
PostgreSQL (a fresh database) and moto's S3 server in its own process. Parts
are 1 KiB (moto's and the app's minimum part size are lowered to 1 KiB for
this benchmark, so that 10,000 parts fit in 10 MiB; S3's own minimum is
5 MiB, which would make a 10,000-part file 50 GiB). Each request's time is
its wall time seen by the client (``requests``), body read, JSON not parsed.

* ``init``     - ``POST <draft>/files/?multipart=True`` declaring N parts:
  S3 CreateMultipartUpload, the books, N presigned URLs in the answer;
* ``re-sign``  - ``POST .../multipart/sign {"parts": [1..N]}``;
* ``complete`` - ``POST .../complete-multipart`` with N parts that were PUT
  to S3 beforehand (untimed): the server lists every page of S3's parts,
  checks numbers, ETags and sizes, completes in S3 and heads the object;
* ``list``     - ``GET <draft>/files/`` of a draft holding F completed files.

Every measurement is a median of ``--repeat`` runs after a warm-up run
(``complete`` at 10,000 parts: at most 3 runs, as each needs 10,000 fresh
parts in S3). The CPU time the app, PostgreSQL and moto spent during the
timed requests is read from ``/proc`` and shown per request, so the share of
the S3 server (moto is a Python server, much slower than a real S3) shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import median

KiB = 1024
PART = KiB


class Scale:
    """The servers, the app's draft URL and the timed requests."""

    def __init__(self, pg_uri: str | None):
        import requests

        common.quiet()
        self.pg = common.postgres_from_args(pg_uri)
        self.s3 = common.start_moto(min_part_size=PART)
        try:
            db_uri = self.pg.database("bench_scale")
            bucket = common.new_bucket(self.s3)
            config = common.app_config(db_uri, self.s3, OAREPO_S3_MIN_PART_SIZE=PART, OAREPO_S3_SIGN_RATE_LIMIT=None)
            from oarepo_s3.app import create_app

            self.app = create_app(config)
            self.seeded = common.seed(self.app, bucket)
            self.server = common.start_gunicorn(config, workers=1, threads=4)
        except BaseException:
            self.s3.stop()
            self.pg.stop()
            raise
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.seeded['token']}"
        self.s3_http = requests.Session()
        self.prefix = self.app.config["OAREPO_S3_DRAFTS_URL_PREFIX"]
        self.draft = f"{self.server.url}{self.prefix}/{self.seeded['draft_id']}"
        self.meters = {"app": self.server.cpu(), "db": self.pg.cpu(), "s3": self.s3.cpu()}
        self.counter = 0

    def close(self) -> None:
        self.server.stop()
        self.s3.stop()
        self.pg.stop()

    # --- one request, timed, with the servers' CPU -----------------------------------------------

    def timed(self, method: str, url: str, expect: int, **kwargs) -> tuple[dict, dict]:
        """(the JSON answer, {"ms", "app_cpu_ms", "db_cpu_ms", "s3_cpu_ms", "bytes"})."""
        for meter in self.meters.values():
            meter.start()
        start = time.perf_counter()
        response = self.http.request(method, url, timeout=600, **kwargs)
        body = response.content
        ms = (time.perf_counter() - start) * 1e3
        cpu = {f"{name}_cpu_ms": meter.read() * 1e3 for name, meter in self.meters.items()}
        if response.status_code != expect:
            raise SystemExit(f"{method} {url} answered {response.status_code}: {body[:2000]!r}")
        return response.json(), {"ms": ms, "bytes": len(body), **cpu}

    def init(self, parts: int, draft: str | None = None) -> tuple[dict, dict]:
        self.counter += 1
        key = f"f{self.counter:06d}.bin"
        return self.timed("POST", f"{draft or self.draft}/files/?multipart=True", 201,
                          json={"key": key, "size": parts * PART, "part_size": PART})

    def delete(self, answer: dict) -> None:
        response = self.http.delete(answer["links"]["self"], timeout=600)
        if response.status_code != 204:
            raise SystemExit(f"DELETE answered {response.status_code}: {response.text[:2000]}")

    def put_parts(self, answer: dict, pool: ThreadPoolExecutor) -> list[dict]:
        """PUT 1 KiB to every part URL, straight to S3 (untimed set-up); the parts for completion."""
        urls = answer["multipart_upload"]["parts_url"]

        def put(item):
            n, url = item
            response = self.s3_http.put(url, data=b"%08d" % n * (PART // 8), timeout=120)
            if response.status_code != 200:
                raise SystemExit(f"PUT part {n} answered {response.status_code}: {response.text[:500]}")
            return {"PartNumber": n, "ETag": response.headers["ETag"]}

        return list(pool.map(put, enumerate(urls, start=1)))

    def complete(self, answer: dict, parts: list[dict]) -> tuple[dict, dict]:
        return self.timed("POST", answer["links"]["complete"], 200, json={"parts": parts})


def runs_of(scale: Scale, op: str, parts: int, repeat: int, pool: ThreadPoolExecutor) -> list[dict]:
    """One warm-up and ``repeat`` timed runs of an operation at a part count."""
    samples = []
    if op == "init":
        for _ in range(repeat + 1):
            answer, sample = scale.init(parts)
            if len(answer["multipart_upload"]["parts_url"]) != parts:
                raise SystemExit(f"init answered {len(answer['multipart_upload']['parts_url'])} URLs, not {parts}")
            scale.delete(answer)
            samples.append(sample)
    elif op == "re-sign":
        answer, _ = scale.init(parts)
        for _ in range(repeat + 1):
            signed, sample = scale.timed("POST", answer["links"]["sign"], 200,
                                         json={"parts": list(range(1, parts + 1))})
            if len(signed["parts"]) != parts:
                raise SystemExit(f"re-sign answered {len(signed['parts'])} URLs, not {parts}")
            samples.append(sample)
        scale.delete(answer)
    elif op == "complete":
        runs = min(repeat, 3) if parts >= 10_000 else repeat
        for _ in range(runs + (0 if parts >= 10_000 else 1)):
            answer, _ = scale.init(parts)
            uploaded = scale.put_parts(answer, pool)
            done, sample = scale.complete(answer, uploaded)
            if done["status"] != "completed" or done["size"] != parts * PART:
                raise SystemExit(f"complete answered {done}")
            scale.delete(done)
            samples.append(sample)
        if parts >= 10_000:
            samples.insert(0, None)  # its warm-up was the smaller sizes' runs
    return [s for s in samples[1:] if s is not None]


def fill_draft(scale: Scale, draft: str, count: int, pool: ThreadPoolExecutor) -> None:
    """Add ``count`` completed one-part files to a draft (init, PUT, complete; in parallel)."""

    def one(_):
        answer, _ = scale.init(1, draft)
        uploaded = scale.put_parts(answer, pool)
        response = scale.http.post(answer["links"]["complete"], json={"parts": uploaded}, timeout=120)
        if response.status_code != 200:
            raise SystemExit(f"complete answered {response.status_code}: {response.text[:500]}")

    with ThreadPoolExecutor(6) as fill:
        list(fill.map(one, range(count)))


def summarize(samples: list[dict]) -> dict:
    return {
        "median_ms": median(s["ms"] for s in samples),
        "min_ms": min(s["ms"] for s in samples),
        "max_ms": max(s["ms"] for s in samples),
        "runs_ms": [round(s["ms"], 2) for s in samples],
        "response_bytes": int(median(s["bytes"] for s in samples)),
        **{f"{k}": median(s[k] for s in samples) for k in ("app_cpu_ms", "db_cpu_ms", "s3_cpu_ms")},
    }


def main(argv: list[str] | None = None) -> None:
    common.exit_on_sigterm()  # a stopped run still stops its servers
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--parts", default="10,1000,10000", help="part counts (default 10,1000,10000)")
    parser.add_argument("--files", default="10,100,1000", help="file counts of the listed draft (default 10,100,1000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per point (default 5)")
    parser.add_argument("--pg", help="PostgreSQL server URI (default: start one)")
    parser.add_argument("--json", type=Path, help="result file (default benchmarks/results/scale.json)")
    args = parser.parse_args(argv)
    part_counts = sorted(int(x) for x in args.parts.split(","))
    file_counts = sorted(int(x) for x in args.files.split(","))

    scale = Scale(args.pg)
    results: dict = {"parts": {}, "files": {}}
    try:
        with ThreadPoolExecutor(16) as pool:
            for parts in part_counts:
                for op in ("init", "re-sign", "complete"):
                    print(f"  {op} {parts} parts ...", file=sys.stderr)
                    results["parts"].setdefault(op, {})[parts] = summarize(runs_of(scale, op, parts, args.repeat, pool))
            draft = f"{scale.server.url}{scale.prefix}/{common.new_draft(scale.app, scale.seeded['user_id'], 'list')}"
            have = 0
            for files in file_counts:
                print(f"  list of {files} files ...", file=sys.stderr)
                fill_draft(scale, draft, files - have, pool)
                have = files
                samples = []
                for _ in range(args.repeat + 1):
                    answer, sample = scale.timed("GET", f"{draft}/files/", 200)
                    if len(answer["entries"]) != files:
                        raise SystemExit(f"the list has {len(answer['entries'])} entries, not {files}")
                    samples.append(sample)
                results["files"][files] = summarize(samples[1:])
    finally:
        scale.close()

    print(f"\nREST requests over HTTP (gunicorn, 1 worker; PostgreSQL; moto), median of {args.repeat} runs, ms")
    print(f"{'operation':<10}{'parts/files':>12}{'median ms':>11}"
          f"{'app CPU':>9}{'DB CPU':>8}{'S3 CPU':>8}{'answer KB':>11}")
    rows = [(op, n, r) for op, by in results["parts"].items() for n, r in by.items()]
    rows += [("list", n, r) for n, r in results["files"].items()]
    for op, n, r in rows:
        print(f"{op:<10}{n:>12,}{r['median_ms']:>11.1f}{r['app_cpu_ms']:>9.0f}{r['db_cpu_ms']:>8.0f}"
              f"{r['s3_cpu_ms']:>8.0f}{r['response_bytes'] / 1e3:>11.1f}")
    print("(CPU: ms of CPU the app, PostgreSQL and moto used during the request; /proc counts in 10 ms ticks)")
    common.write_result("scale", {
        "repeat": args.repeat, "part_size": PART, "server": "gunicorn 1 worker x 4 threads",
        "database": "postgresql", "s3": "moto (own process)",
        "versions": common.package_versions("moto", "gunicorn", "flask", "sqlalchemy", "psycopg2-binary"),
        **results,
    }, args.json)


if __name__ == "__main__":
    main()
