"""Profile the control plane: where init, sign and complete spend the app's CPU, beside the baseline.

Runs the benchmark app (``wsgi.build``: the API plus ``/_bench/baseline``)
in this process against moto and PostgreSQL, drives it with Flask's test
client (same WSGI stack, no HTTP server: the profile shows the app alone)
and profiles each request type with cProfile over ``--uploads`` uploads of
``--parts`` parts. Prints, per type, the CPU per request (thread time,
unprofiled pass), that CPU split by the package that spent it, and the
functions with the most CPU of their own and in total (CPU time: waits for
S3 and the database do not count). The concurrency benchmark
(``bench_concurrency.py``) gives the figures under load; this tool says
where they go: how much is Invenio's, SQLAlchemy's, botocore's, Flask's,
and ours.

    .venv/bin/python benchmarks/profile_control_plane.py --uploads 200 --top 25
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import sysconfig
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import app_config, new_bucket, quiet, seed, start_moto

TYPES = ("baseline", "init", "sign", "complete")
PART = 1024
"""Bytes per part, as in bench_concurrency (moto and the app are told to allow it): S3's work stays small."""


class Driver:
    """One user's uploads through the test client; each request type timed and optionally profiled."""

    def __init__(self, app, token: str, draft: str, parts: int, s3_session):
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.draft, self.parts, self.s3 = draft, parts, s3_session
        self.cpu: dict[str, list[float]] = defaultdict(list)
        # Timed by thread CPU: waits for S3 and the database are not in the profile.
        self.profiles: dict[str, cProfile.Profile] = {t: cProfile.Profile(time.thread_time) for t in TYPES}
        self.count = 0

    def request(self, kind: str, method: str, url: str, profile: bool, **kwargs):
        profiler = self.profiles[kind] if profile else None
        start = time.thread_time()
        if profiler is not None:
            profiler.enable()
        response = self.client.open(url, method=method, headers=self.headers, **kwargs)
        response.get_data()
        if profiler is not None:
            profiler.disable()
        self.cpu[kind].append(time.thread_time() - start)
        if response.status_code >= 400:
            raise RuntimeError(f"{kind} {url}: {response.status_code} {response.get_data(as_text=True)[:300]}")
        return response

    def upload(self, profile: bool) -> None:
        self.count += 1
        base = f"/draft/records/{self.draft}"
        self.request("baseline", "GET", f"/_bench/baseline/{self.draft}", profile)
        body = {"key": f"p{self.count}.bin", "size": self.parts * PART, "part_size": PART}
        answer = self.request("init", "POST", f"{base}/files/?multipart=True", profile, json=body).get_json()
        signed = self.request("sign", "POST", _path(answer["links"]["sign"]), profile,
                              json={"parts": list(range(1, self.parts + 1))}).get_json()
        etags = []
        payload = b"x" * PART
        for part in signed["parts"]:
            put = self.s3.put(part["url"], data=payload, timeout=60)
            put.raise_for_status()
            etags.append({"PartNumber": part["PartNumber"], "ETag": put.headers["ETag"]})
        self.request("complete", "POST", _path(answer["links"]["complete"]), profile, json={"parts": etags})


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    split = urlsplit(url)
    return split.path + (f"?{split.query}" if split.query else "")


STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
SITE = str(Path(sysconfig.get_paths()["purelib"]).resolve())
HARNESS = ("werkzeug/test.py", "flask/testing.py", "benchmarks/")
"""The test client and this harness: they stand in for gunicorn, whose own work is not a request's."""


def package_of(filename: str) -> str | None:
    """The distribution a function's file belongs to; None for the standard library and built-ins."""
    if filename.startswith(("~", "<")):  # built-in functions, frozen stdlib modules
        return None
    path = str(Path(filename).resolve())
    if any(marker in path for marker in HARNESS):
        return "(test client and harness)"
    if path.startswith(SITE):
        top = path[len(SITE):].lstrip("/").split("/", 1)[0]
        return top.removesuffix(".py")
    if path.startswith(STDLIB):
        return None
    if "/oarepo_s3/" in path:
        return "oarepo_s3"
    return "(other)"


def cpu_by_package(profile: cProfile.Profile) -> dict[str, float]:
    """Each function's own CPU, credited to its package; standard-library and built-in time to its callers'.

    ``json.dumps`` called by Flask is Flask's, ``socket.recv`` called (via
    http.client) by urllib3 is urllib3's: a stdlib function's own time is
    split among its callers in proportion to what each call site spent
    there (cProfile keeps that per caller), following callers up until a
    package is found.
    """
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    owners: dict[tuple, dict[str, float]] = {}

    def owner(func: tuple, depth: int = 0) -> dict[str, float]:
        if func in owners:
            return owners[func]
        package = package_of(func[0])
        if package is not None:
            share = {package: 1.0}
        else:
            callers = stats[func][4] if func in stats else {}
            total = sum(c[2] for c in callers.values())
            share = defaultdict(float)
            if depth > 40 or not callers or total <= 0:
                share["(standard library)"] = 1.0
            else:
                owners[func] = {"(standard library)": 1.0}  # a recursion back here stops
                for caller, c in callers.items():
                    for pkg, part in owner(caller, depth + 1).items():
                        share[pkg] += part * c[2] / total
            share = dict(share)
        owners[func] = share
        return share

    totals: dict[str, float] = defaultdict(float)
    for func, (_cc, _nc, tottime, _ct, _callers) in stats.items():
        for pkg, part in owner(func).items():
            totals[pkg] += tottime * part
    return dict(totals)


def report(driver: Driver, top: int, out) -> dict:
    baseline = common.median(driver.cpu["baseline"]) * 1e3
    figures = {}
    for kind in TYPES:
        median = common.median(driver.cpu[kind]) * 1e3
        figures[kind] = {"cpu_ms_median": round(median, 3), "vs_baseline": round(median / baseline, 2)}
        print(f"\n=== {kind}: {median:.2f} ms CPU per request (median, unprofiled), {median / baseline:.2f}x the "
              f"baseline ===", file=out)
        packages = cpu_by_package(driver.profiles[kind])
        profiled = sum(packages.values())
        # The profile's shares applied to the unprofiled CPU (cProfile's own overhead spreads about evenly).
        figures[kind]["by_package_ms"] = {pkg: round(median * t / profiled, 3) for pkg, t in
                                          sorted(packages.items(), key=lambda kv: -kv[1]) if t / profiled >= 0.005}
        print("--- CPU by package (ms per request, the profile's shares of the unprofiled CPU) ---", file=out)
        for pkg, ms in figures[kind]["by_package_ms"].items():
            print(f"{ms:8.2f}  {pkg}", file=out)
        for sort in ("tottime", "cumulative"):
            buffer = io.StringIO()
            stats = pstats.Stats(driver.profiles[kind], stream=buffer)
            stats.strip_dirs().sort_stats(sort).print_stats(top)
            text = buffer.getvalue()
            print(f"--- by {sort} ---", file=out)
            print(text[text.find("   ncalls"):].rstrip(), file=out)
    return figures


def s3_call_floor(flask_app, calls: int, out) -> dict:
    """CPU of one S3 control call through botocore vs the same request presigned by us and sent by urllib3.

    ListParts of a 10-part upload, both ways, alternating rounds: what
    botocore's pipeline (parameter checks, serialisation, endpoint rules,
    event hooks, user agent, signing, parsing) adds to the HTTP exchange and
    XML parsing that any S3 client has to do.
    """
    import xml.etree.ElementTree as ET

    import urllib3

    with flask_app.app_context():
        from oarepo_s3.proxies import current_oarepo_s3

        s3, presigner = current_oarepo_s3.s3, current_oarepo_s3.presigner
    bucket = s3.client.list_buckets()["Buckets"][0]["Name"]
    upload_id = s3.create_multipart_upload(bucket, "floor.bin", "application/octet-stream")
    for number in range(1, 11):
        s3.call("upload_part", Bucket=bucket, Key="floor.bin", UploadId=upload_id, PartNumber=number,
                Body=b"x" * PART)
    pool = urllib3.PoolManager(maxsize=2)
    namespace = "{http://s3.amazonaws.com/doc/2006-03-01/}"

    def botocore_call() -> int:
        return len(s3.list_parts(bucket, "floor.bin", upload_id))

    def presigned_call() -> int:
        url = presigner.presign("GET", bucket, "floor.bin", expires_in=900, params={"uploadId": upload_id})
        answer = pool.request("GET", url)
        return sum(1 for _ in ET.fromstring(answer.data).iter(f"{namespace}Part"))

    cpu: dict[str, list[float]] = defaultdict(list)
    for _ in range(3):
        for call in (botocore_call, presigned_call):
            for _ in range(calls // 3):
                start = time.thread_time()
                if call() != 10:
                    raise RuntimeError(f"{call.__name__}: not 10 parts")
                cpu[call.__name__].append(time.thread_time() - start)
    figures = {name: round(common.median(v) * 1e3, 3) for name, v in cpu.items()}
    print(f"\n=== one S3 control call (ListParts, 10 parts), CPU ms median: botocore {figures['botocore_call']:.2f}, "
          f"presigned + urllib3 {figures['presigned_call']:.2f} ===", file=out)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=200, help="uploads per pass (one timed, one profiled)")
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--top", type=int, default=25, help="functions shown per table")
    parser.add_argument("--pg", help="PostgreSQL server URI (the runner's); default: start one")
    parser.add_argument("--json", type=Path, help="write the figures here (default: results/<name>.json)")
    args = parser.parse_args(argv)
    quiet()
    import requests

    s3 = start_moto(min_part_size=PART)
    pg = common.postgres_from_args(args.pg)
    try:
        db_uri = pg.database("profile_control_plane")
        bucket = new_bucket(s3)
        config = app_config(db_uri, s3, OAREPO_S3_MIN_PART_SIZE=PART, OAREPO_S3_SIGN_RATE_LIMIT=None)
        os.environ["OAREPO_S3_BENCH_CONFIG"] = json.dumps(config)
        from oarepo_s3.app import create_app

        info = seed(create_app(config), bucket)
        import wsgi  # the benchmark app, built from OAREPO_S3_BENCH_CONFIG

        flask_app = wsgi.app.app  # ByteCounter -> the Flask app
        driver = Driver(flask_app, info["token"], info["draft_id"], args.parts, requests.Session())
        for _ in range(10):  # warm up: imports, caches, connection pools
            driver.upload(profile=False)
        driver.cpu.clear()
        for _ in range(args.uploads):
            driver.upload(profile=False)
        timed = {k: list(v) for k, v in driver.cpu.items()}
        for _ in range(args.uploads):
            driver.upload(profile=True)
        driver.cpu = defaultdict(list, timed)
        figures = report(driver, args.top, sys.stdout)
        floor = s3_call_floor(flask_app, args.uploads, sys.stdout)
        common.write_result("profile_control_plane", {"uploads": args.uploads, "parts": args.parts,
                                                      "requests": figures, "s3_call_floor_ms": floor}, args.json)
    finally:
        pg.stop()
        s3.stop()


if __name__ == "__main__":
    main()
