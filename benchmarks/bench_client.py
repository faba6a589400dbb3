"""oarepo-s3 upload/download vs aws-cli vs boto3 on the same S3, file, part size and concurrency.

Run::

    .venv/bin/python benchmarks/bench_client.py [--s3 moto|ceph] [--size-mib 1024] [--part-size-mib 16]
        [--concurrency 8] [--repeat 3] [--pg URI] [--json FILE]

Each client runs as a subprocess; per run it measures wall time, throughput,
the client's CPU seconds per GiB (``RUSAGE_CHILDREN`` around the
subprocess: its user + system time alone) and the S3 server's CPU seconds
per GiB (moto's process, or Ceph's radosgw + OSD + monitor, read from
``/proc``), which shows when the server, not the client, is the bottleneck;
and how busy the whole (shared) machine was (``/proc/stat``).

Uploads:

* ``oarepo-s3`` - the real command, ``python -m oarepo_s3_client upload FILE
  --draft URL --json``, through the app (oarepo_s3.app under gunicorn, one
  worker with 8 threads, on PostgreSQL): it hashes every part (Content-MD5
  or SHA-256, as its ``--checksum`` default chooses; signed into the part's
  URL by the server, checked by S3), PUTs straight to S3, completes and
  verifies the final checksum;
* ``aws-cli``   - ``aws s3 cp FILE s3://bucket/key`` with the same
  ``multipart_chunksize``/``max_concurrent_requests``, checksums
  ``when_required`` (no extra CRC32); on a plain-``http://`` endpoint
  botocore signs every part's SHA-256 as its payload hash, so it hashes
  every byte too, and S3 verifies it;
* ``boto3``     - ``client.upload_file`` with the same ``TransferConfig`` (ditto).

Downloads of the same object: ``oarepo-s3 download`` (the API's 302, then
parallel ranged GETs), ``aws s3 cp s3://... FILE``, ``client.download_file``.

**Payload bytes.** The app counts every request and response body byte at
the WSGI level (``benchmarks/wsgi.py``). The counts over the ``oarepo-s3``
upload and download runs are reported: control JSON only, and 0 bytes that
are not JSON (the file's bytes never reach the app). First, 1 MiB sent
through the app's echo route must show in the counters, in and out: the
zero is measured by counters that do see payload.

Methods run in a rotating order after a warm-up upload and download;
medians of ``--repeat`` runs. Ceph RGW keeps objects in RAM (memstore):
deleted objects are garbage-collected after each run.
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
from common import REGION, ROOT, GiB, MiB, median

METHODS = ("oarepo-s3", "aws-cli", "boto3")
NO_SENDFILE = "oarepo-s3 --no-zero-copy"
"""Our upload with parts sent through requests instead of ``os.sendfile``: what zero-copy saves (uploads only)."""
UPLOAD_METHODS = (*METHODS, NO_SENDFILE)

BOTO3_CHILD = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
direction, path, endpoint, bucket, key, part, concurrency = sys.argv[1:8]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(
    signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=int(concurrency),
    request_checksum_calculation="when_required", response_checksum_validation="when_required"))
config = TransferConfig(multipart_threshold=int(part), multipart_chunksize=int(part),
                        max_concurrency=int(concurrency), use_threads=True)
if direction == "up":
    client.upload_file(path, bucket, key, Config=config)
else:
    client.download_file(bucket, key, path, Config=config)
"""


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


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as fp:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MiB))
            fp.write(block)
            left -= len(block)


class Bench:
    """The S3 server, the app, the file and one method per client."""

    def __init__(self, args):
        common.quiet()
        self.args = args
        self.size, self.part, self.conc = args.size_mib * MiB, args.part_size_mib * MiB, args.concurrency
        self.work = Path(tempfile.mkdtemp(prefix="oarepo-s3-bench-client-"))
        self.s3 = common.start_ceph() if args.s3 == "ceph" else common.start_moto()
        self.pg = None
        self.server = None
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
            self.token = seeded["token"]
        except BaseException:
            self.close()
            raise
        self.path = self.work / "random.bin"
        self.out = self.work / "download.bin"
        aws_config = self.work / "aws-config"
        aws_config.write_text(
            f"[default]\nregion = {REGION}\nrequest_checksum_calculation = when_required\n"
            f"response_checksum_validation = when_required\ns3 =\n  multipart_threshold = {self.part}\n"
            f"  multipart_chunksize = {self.part}\n  max_concurrent_requests = {self.conc}\n  addressing_style = path\n"
        )
        self.env = {**os.environ, "AWS_CONFIG_FILE": str(aws_config), "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                    "AWS_ACCESS_KEY_ID": self.s3.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                    "AWS_DEFAULT_REGION": REGION, "OAREPO_S3_TOKEN": self.token,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "client"), os.environ.get("PYTHONPATH")]))}
        import requests

        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {self.token}"
        self.runs = 0
        self.payload = {"upload": [], "download": []}

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.pg is not None:
            self.pg.stop()
        self.s3.stop()
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)

    def timed(self, cmd: list[str]) -> dict:
        """Run a client subprocess: wall s, its CPU s, the S3 server's and the app's CPU s, its stdout."""
        s3_cpu, app_cpu, machine = self.s3.cpu().start(), self.server.cpu().start(), common.MachineMeter().start()
        cpu, wall = child_cpu(), time.perf_counter()
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - wall, child_cpu() - cpu
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
        return {"wall_s": wall, "cpu_s": cpu, "s3_cpu_s": s3_cpu.read(), "app_cpu_s": app_cpu.read(),
                "machine_cpu_s": machine.read(), "stdout": done.stdout}

    def only_object(self) -> str:
        """The S3 key of the one object in the bucket (the kept file), for aws-cli's and boto3's downloads."""
        keys = [o["Key"] for o in self.s3_client.list_objects_v2(Bucket=self.bucket).get("Contents", [])]
        if len(keys) != 1:
            raise SystemExit(f"expected one object in {self.bucket}, found {keys}")
        return keys[0]

    def upload(self, method: str, keep: bool = False) -> dict:
        self.runs += 1
        key = f"{method}-{self.runs}.bin"
        if method.startswith("oarepo-s3"):
            before = self.server.byte_counts()
            run = self.timed([sys.executable, "-m", "oarepo_s3_client", "upload", str(self.path), "--key", key,
                              "--draft", self.draft, "--concurrency", str(self.conc), "--part-size", str(self.part),
                              "--json", "--state-dir", str(self.work / "state"), *method.split()[1:]])
            self.payload["upload"].append(delta(before, self.server.byte_counts()))
            result = json.loads(run.pop("stdout").splitlines()[-1])
            run["checksum_algorithm"] = result.get("checksum_algorithm", "md5")
            if result["status"] != "completed" or result["size"] != self.size:
                raise SystemExit(f"oarepo-s3 upload: {result}")
            if keep:
                self.content_url = result["content_url"]
            else:
                self.api.delete(result["url"], timeout=120).raise_for_status()
        else:
            cmd = ([str(Path(sys.executable).parent / "aws"), "s3", "cp", str(self.path), f"s3://{self.bucket}/{key}",
                    "--endpoint-url", self.s3.endpoint, "--only-show-errors"] if method == "aws-cli" else
                   [sys.executable, "-c", BOTO3_CHILD, "up", str(self.path), self.s3.endpoint, self.bucket, key,
                    str(self.part), str(self.conc)])
            run = self.timed(cmd)
            run.pop("stdout")
            head = self.s3_client.head_object(Bucket=self.bucket, Key=key)
            if head["ContentLength"] != self.size:
                raise SystemExit(f"{method} stored {head['ContentLength']} bytes, not {self.size}")
            self.s3_client.delete_object(Bucket=self.bucket, Key=key)
        self.collect_garbage()
        return run

    def download(self, method: str, check: bool = False) -> dict:
        self.out.unlink(missing_ok=True)
        if method == "oarepo-s3":
            before = self.server.byte_counts()
            run = self.timed([sys.executable, "-m", "oarepo_s3_client", "download", self.content_url, "-o",
                              str(self.out), "--concurrency", str(self.conc), "--chunk-size", str(self.part), "--json"])
            self.payload["download"].append(delta(before, self.server.byte_counts()))
        elif method == "aws-cli":
            run = self.timed([str(Path(sys.executable).parent / "aws"), "s3", "cp",
                              f"s3://{self.bucket}/{self.only_object()}", str(self.out), "--endpoint-url",
                              self.s3.endpoint, "--only-show-errors"])
        else:
            run = self.timed([sys.executable, "-c", BOTO3_CHILD, "down", str(self.out), self.s3.endpoint, self.bucket,
                              self.only_object(), str(self.part), str(self.conc)])
        run.pop("stdout")
        if self.out.stat().st_size != self.size:
            raise SystemExit(f"{method} downloaded {self.out.stat().st_size} bytes, not {self.size}")
        if check and not filecmp.cmp(self.path, self.out, shallow=False):
            raise SystemExit(f"{method} downloaded other bytes than were uploaded")
        self.out.unlink()
        return run

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
        write_random_file(bench.path, bench.size)
        bench.path.read_bytes()  # into the page cache, for every method alike
        bench.upload("oarepo-s3", keep=True)  # warm-up, and the file the downloads read
        bench.download("oarepo-s3", check=True)  # warm-up, and proof the bytes came back
        control = bench.counter_check()
        bench.payload = {"upload": [], "download": []}
        up: dict[str, list[dict]] = {m: [] for m in UPLOAD_METHODS}
        down: dict[str, list[dict]] = {m: [] for m in METHODS}
        for i in range(args.repeat):
            turn = i % len(UPLOAD_METHODS)
            for method in UPLOAD_METHODS[turn:] + UPLOAD_METHODS[:turn]:
                print(f"  run {i + 1}/{args.repeat}: {method} upload" + (", download" if method in METHODS else "")
                      + " ...", file=sys.stderr)
                up[method].append(bench.upload(method))
                if method in METHODS:
                    down[method].append(bench.download(method))
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
        "versions": common.package_versions("oarepo-s3-client", "awscli", "boto3", "botocore", "s3transfer",
                                            "requests", "moto"),
    }, args.json)
    return 0


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
