"""InvenioRDM's multipart transfer ("M") on our storage vs stock invenio-s3's ``S3FSFileStorage``, side by side.

Run::

    .venv/bin/python benchmarks/bench_rdm.py [--parts 1000,10000] [--repeat 5] [--pg URI] [--json FILE]

invenio-records-resources' own FileService and FileResource (the test app of
``tests/rdm``: a minimal record class, nothing indexed) served over real HTTP
by a threaded werkzeug server in this process, PostgreSQL, and moto's S3 in
its own process. Parts are 1 KiB (moto's and the app's minimum part size
lowered so that 10,000 parts fit in 10 MiB). For each part count, one
pending file per storage:

* ``links``  - ``GET .../files/<key>`` of the pending file: records-resources
  asks the storage's ``multipart_links`` for every part's URL on every
  serialization (also timed alone, in-process: ``multipart_links`` itself);
* ``commit`` - ``POST .../files/<key>/commit`` after every part was PUT to S3
  (untimed): ours lists S3's parts, checks numbers, sizes and the final size,
  completes; invenio-s3 lists the parts and completes. One run each (a
  commit can only happen once); records-resources' checksum task is queued,
  not run (its broker is in memory).

Medians of ``--repeat`` runs after a warm-up, ours and invenio-s3's in
alternating order.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import median
from rdm_app import create_rdm_bench_app, seed_rdm_record

sys.path.insert(0, str(common.ROOT))

KiB = 1024
PART = KiB
STORAGES = ("ours", "invenio-s3")


class Bench:
    """The servers, the record and the two storage factories."""

    def __init__(self, pg_uri: str | None):
        import requests
        from invenio_s3 import s3fs_storage_factory
        from werkzeug.serving import make_server

        common.quiet()
        self.pg = common.postgres_from_args(pg_uri)
        self.s3 = common.start_moto(min_part_size=PART)
        try:
            db_uri = self.pg.database("bench_rdm")
            bucket = common.new_bucket(self.s3)
            config = common.app_config(db_uri, self.s3, OAREPO_S3_MIN_PART_SIZE=PART)
            self.app = create_rdm_bench_app(config)
            self.pid = seed_rdm_record(self.app, bucket)
            self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
        except BaseException:
            self.s3.stop()
            self.pg.stop()
            raise
        url = f"http://127.0.0.1:{self.server.server_port}"
        self.app.config["SITE_API_URL"] = self.app.config["SITE_UI_URL"] = url
        self.files = f"{url}/rdm/records/{self.pid}/files"
        state = self.app.extensions["invenio-files-rest"]
        self.factories = {"ours": state.storage_factory, "invenio-s3": s3fs_storage_factory}
        self.state = state
        self.http = requests.Session()
        self.s3_http = requests.Session()

    def close(self) -> None:
        self.server.shutdown()
        self.s3.stop()
        self.pg.stop()

    def use(self, storage: str) -> None:
        """Serve every following request with ``storage``'s factory (files-rest reads it per request)."""
        self.state.storage_factory = self.factories[storage]

    def init(self, storage: str, key: str, parts: int) -> dict:
        self.use(storage)
        body = [{"key": key, "size": parts * PART, "transfer": {"type": "M", "parts": parts, "part_size": PART}}]
        answer = self.http.post(self.files, json=body, timeout=600)
        answer.raise_for_status()
        (entry,) = [e for e in answer.json()["entries"] if e["key"] == key]
        assert len(entry["links"]["parts"]) == parts, (storage, len(entry["links"]["parts"]))
        return entry

    def time_links(self, storage: str, key: str, parts: int) -> tuple[float, int]:
        """One ``GET files/<key>``: wall ms, answer bytes."""
        self.use(storage)
        start = time.perf_counter()
        answer = self.http.get(f"{self.files}/{key}", timeout=600)
        elapsed = (time.perf_counter() - start) * 1e3
        answer.raise_for_status()
        assert len(answer.json()["links"]["parts"]) == parts
        return elapsed, len(answer.content)

    def time_storage_links(self, storage: str, key: str) -> float:
        """``multipart_links(**metadata)`` alone, in-process: ms."""
        from invenio_db import db
        from invenio_files_rest.models import ObjectVersion

        from tests.rdm.records import RdmFileMetadata

        with self.app.test_request_context():
            row = db.session.query(RdmFileMetadata).filter(RdmFileMetadata.key == key).one()
            metadata = row.json["transfer"]["multipart_metadata"]
            fileinstance = db.session.get(ObjectVersion, row.object_version_id).file
            store = self.factories[storage](fileinstance=fileinstance)
            start = time.perf_counter()
            links = store.multipart_links(**metadata)
            elapsed = (time.perf_counter() - start) * 1e3
            assert len(links["parts"]) == metadata["parts"]
            db.session.remove()
            return elapsed

    def put_parts(self, entry: dict) -> None:
        """PUT every part's 1 KiB to its presigned URL (untimed)."""
        payload = b"x" * PART

        def put(link: dict) -> None:
            answer = self.s3_http.put(link["url"], data=payload, timeout=120)
            answer.raise_for_status()

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, entry["links"]["parts"]))

    def time_commit(self, storage: str, key: str) -> float:
        self.use(storage)
        start = time.perf_counter()
        answer = self.http.post(f"{self.files}/{key}/commit", timeout=600)
        elapsed = (time.perf_counter() - start) * 1e3
        answer.raise_for_status()
        assert answer.json()["status"] == "completed", answer.text
        return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--parts", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", help="a PostgreSQL URI (default: start one)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    common.exit_on_sigterm()
    counts = [int(n) for n in args.parts.split(",")]
    bench = Bench(args.pg)
    results: dict[str, dict[str, dict]] = {"links": {}, "storage_links": {}, "commit": {}}
    try:
        for s in STORAGES:  # warm-up: first commit (Celery's queue imports kombu's transport), first links
            bench.put_parts(bench.init(s, f"warm-up-{s}.bin", 2))
            bench.time_commit(s, f"warm-up-{s}.bin")
        for parts in counts:
            entries = {s: bench.init(s, f"{s}-{parts}.bin", parts) for s in STORAGES}
            wall: dict[str, list[float]] = {s: [] for s in STORAGES}
            alone: dict[str, list[float]] = {s: [] for s in STORAGES}
            size: dict[str, int] = {}
            for run in range(args.repeat + 1):
                order = STORAGES if run % 2 == 0 else STORAGES[::-1]
                for s in order:
                    elapsed, size[s] = bench.time_links(s, f"{s}-{parts}.bin", parts)
                    in_process = bench.time_storage_links(s, f"{s}-{parts}.bin")
                    if run:  # the first run warms up
                        wall[s].append(elapsed)
                        alone[s].append(in_process)
            for s in STORAGES:
                results["links"].setdefault(s, {})[str(parts)] = {
                    "median_ms": median(wall[s]), "runs_ms": wall[s], "response_bytes": size[s]}
                results["storage_links"].setdefault(s, {})[str(parts)] = {
                    "median_ms": median(alone[s]), "runs_ms": alone[s]}
            for s in STORAGES:
                bench.put_parts(entries[s])
            for s in STORAGES if parts % 2 == 0 else STORAGES[::-1]:
                results["commit"].setdefault(s, {})[str(parts)] = {
                    "ms": bench.time_commit(s, f"{s}-{parts}.bin")}
            print(f"{parts:>6} parts   GET file (links)   ours {median(wall['ours']):9.1f} ms   invenio-s3 "
                  f"{median(wall['invenio-s3']):9.1f} ms   {median(wall['invenio-s3']) / median(wall['ours']):6.1f}x",
                  flush=True)
            print(f"{'':>6}         multipart_links    ours {median(alone['ours']):9.1f} ms   invenio-s3 "
                  f"{median(alone['invenio-s3']):9.1f} ms   "
                  f"{median(alone['invenio-s3']) / median(alone['ours']):6.1f}x", flush=True)
            c = results["commit"]
            print(f"{'':>6}         commit             ours {c['ours'][str(parts)]['ms']:9.1f} ms   invenio-s3 "
                  f"{c['invenio-s3'][str(parts)]['ms']:9.1f} ms", flush=True)
    finally:
        bench.close()
    if args.json:
        common.write_result("rdm", {
            "parts": counts, "part_size": PART, "repeat": args.repeat, **results,
            "server": "werkzeug (threaded, in the benchmark's process)",
            "versions": common.package_versions("invenio-records-resources", "invenio-s3", "moto"),
        }, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
