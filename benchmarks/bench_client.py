"""oarepo-s3 upload vs aws-cli vs boto3: same machine, same S3, same file, same part size and concurrency.

Run::

    .venv/bin/python benchmarks/bench_client.py [--size-mib 1024] [--part-size-mib 16] [--concurrency 8]
        [--repeat 1] [--s3-endpoint URL --access-key K --secret-key S] [--json FILE]

Uploads one file of random bytes three ways, each as a subprocess, and
measures wall time, throughput and the client's CPU seconds per GiB
(``resource.getrusage(RUSAGE_CHILDREN)`` around the subprocess: user +
system time of the client process alone):

* ``oarepo-s3`` - ``oarepo-s3 upload FILE --draft URL`` (as ``python -m
  oarepo_s3_client``) through the REST
  app (served in this process by werkzeug, SQLite): the client signs every
  part's Content-MD5 through the API, PUTs straight to S3, completes and
  verifies the checksum;
* ``aws-cli``   - ``aws s3 cp FILE s3://bucket/key`` with the same
  ``multipart_chunksize``/``max_concurrent_requests`` and checksums
  ``when_required`` (no Content-MD5, no verification);
* ``boto3``     - ``boto3.client.upload_file`` with the same ``TransferConfig`` (ditto).

S3 is moto (``ThreadedMotoServer`` in a child process of its own, so that
its CPU never counts as a client's) unless ``--s3-endpoint`` names another
(e.g. Ceph RGW); the app signs URLs for the same endpoint. Methods run in
rotating order, ``--repeat`` times; medians are reported. The ``MD5 floor``
line is what hashing alone costs here: oarepo-s3 must hash every byte for
Content-MD5 and the final checksum, the two others hash nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MiB = 1024 * 1024
GiB = 1024 * MiB
REGION = "us-east-1"
METHODS = ("oarepo-s3", "aws-cli", "boto3")

MOTO_CHILD = """
import logging, os, sys, time
logging.getLogger("werkzeug").setLevel(logging.ERROR)
os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", str(5 * 1024 * 1024))
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.stop()
"""

BOTO3_CHILD = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
path, endpoint, bucket, key, part, concurrency = sys.argv[1:7]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(
    signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=int(concurrency),
    request_checksum_calculation="when_required", response_checksum_validation="when_required"))
config = TransferConfig(multipart_threshold=int(part), multipart_chunksize=int(part),
                        max_concurrency=int(concurrency), use_threads=True)
client.upload_file(path, bucket, key, Config=config)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a client subprocess: (wall seconds, its CPU seconds, the completed process)."""
    cpu, wall = child_cpu(), time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.monotonic() - wall, child_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall, cpu, done


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", MOTO_CHILD, str(port)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != "ready":
        raise SystemExit("moto did not start")
    return process, f"http://127.0.0.1:{port}"


def s3_client(endpoint: str, access_key: str, secret_key: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, config=Config(
                            signature_version="s3v4", s3={"addressing_style": "path"},
                            request_checksum_calculation="when_required", response_checksum_validation="when_required"))


def start_app(endpoint: str, access_key: str, secret_key: str, bucket: str, data_dir: Path) -> tuple[str, str, object]:
    """The REST app in a thread (werkzeug, SQLite): (draft URL, token, server)."""
    warnings.filterwarnings("ignore")
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    import demo.__main__ as demo_main
    from demo.app import create_app

    demo_main.BUCKET = bucket
    app = create_app({
        "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{data_dir / 'bench.db'}",
        "S3_ENDPOINT_URL": endpoint, "S3_ACCESS_KEY_ID": access_key, "S3_SECRET_ACCESS_KEY": secret_key,
        "S3_REGION_NAME": REGION,
    })
    seeded = demo_main.seed_database(app)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}{app.config['OAREPO_S3_DRAFTS_URL_PREFIX']}/{seeded['draft_id']}"
    return url, seeded["demo@example.org"]["token"], server


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as fp:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MiB))
            fp.write(block)
            left -= len(block)


def md5_floor(seconds_per_sample: int = 256 * MiB) -> float:
    """CPU seconds per GiB that hashlib's MD5 alone costs on this machine."""
    data = os.urandom(seconds_per_sample)
    start = time.process_time()
    hashlib.md5(data).digest()
    return (time.process_time() - start) * GiB / seconds_per_sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--part-size-mib", type=int, default=16, help="part size in MiB (default 16)")
    parser.add_argument("--concurrency", type=int, default=8, help="parts in flight (default 8)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each method; medians are reported")
    parser.add_argument("--s3-endpoint", help="use this S3 instead of starting moto (e.g. Ceph RGW)")
    parser.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "bench"))
    parser.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "bench-secret"))
    parser.add_argument("--json", dest="json_file", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)

    size, part, conc = args.size_mib * MiB, args.part_size_mib * MiB, args.concurrency
    work = Path(tempfile.mkdtemp(prefix="oarepo-s3-bench-"))
    moto = None
    try:
        if args.s3_endpoint:
            endpoint = args.s3_endpoint
        else:
            moto, endpoint = start_moto()
        s3 = s3_client(endpoint, args.access_key, args.secret_key)
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        draft_url, token, server = start_app(endpoint, args.access_key, args.secret_key, bucket, work)
        path = work / "random.bin"
        print(f"writing {args.size_mib} MiB of random bytes ...", file=sys.stderr)
        write_random_file(path, size)
        path.read_bytes() if size <= 2 * GiB else None  # into the page cache for every method alike

        aws_config = work / "aws-config"
        aws_config.write_text(
            f"[default]\nregion = {REGION}\nrequest_checksum_calculation = when_required\n"
            f"response_checksum_validation = when_required\ns3 =\n  multipart_threshold = {part}\n"
            f"  multipart_chunksize = {part}\n  max_concurrent_requests = {conc}\n  addressing_style = path\n"
        )
        env = {**os.environ, "AWS_CONFIG_FILE": str(aws_config), "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "AWS_ACCESS_KEY_ID": args.access_key, "AWS_SECRET_ACCESS_KEY": args.secret_key,
               "AWS_DEFAULT_REGION": REGION, "OAREPO_S3_TOKEN": token,
               # the client's source tree, should it not be installed (pip install -e client)
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "client"), os.environ.get("PYTHONPATH")]))}
        bindir = Path(sys.executable).parent
        api = __import__("requests").Session()
        api.headers["Authorization"] = f"Bearer {token}"

        def run(method: str, i: int) -> tuple[float, float]:
            key = f"{method}-{i}.bin"
            if method == "oarepo-s3":
                wall, cpu, done = timed([sys.executable, "-m", "oarepo_s3_client", "upload", str(path), "--key", key,
                                         "--draft", draft_url, "--concurrency", str(conc), "--part-size", str(part),
                                         "--json", "--state-dir", str(work / "state")], env)
                result = json.loads(done.stdout.splitlines()[-1])
                assert result["status"] == "completed" and result["size"] == size, result
                api.delete(result["url"], timeout=60)  # frees moto's memory
            elif method == "aws-cli":
                wall, cpu, _ = timed([str(bindir / "aws"), "s3", "cp", str(path), f"s3://{bucket}/{key}",
                                      "--endpoint-url", endpoint, "--only-show-errors"], env)
            else:
                wall, cpu, _ = timed([sys.executable, "-c", BOTO3_CHILD, str(path), endpoint, bucket, key, str(part),
                                      str(conc)], env)
            if method != "oarepo-s3":
                head = s3.head_object(Bucket=bucket, Key=key)
                assert head["ContentLength"] == size, head
                s3.delete_object(Bucket=bucket, Key=key)
            return wall, cpu

        run("oarepo-s3", -1)  # warm-up: page cache, app, moto
        samples: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
        for i in range(args.repeat):
            order = METHODS[i % 3:] + METHODS[: i % 3]
            for method in order:
                print(f"  run {i + 1}/{args.repeat}: {method} ...", file=sys.stderr)
                samples[method].append(run(method, i))
        server.shutdown()

        rows = {}
        for method in METHODS:
            wall = statistics.median(w for w, _ in samples[method])
            cpu = statistics.median(c for _, c in samples[method])
            rows[method] = {"wall_s": round(wall, 3), "throughput_mb_s": round(size / wall / 1e6, 1),
                            "cpu_s": round(cpu, 3), "cpu_s_per_gib": round(cpu * GiB / size, 3)}
        floor = md5_floor()
        report(args, endpoint if args.s3_endpoint else "moto (ThreadedMotoServer, own process)", rows, floor)
        if args.json_file:
            Path(args.json_file).write_text(json.dumps({
                "size_mib": args.size_mib, "part_size_mib": args.part_size_mib, "concurrency": conc,
                "repeat": args.repeat, "s3": args.s3_endpoint or "moto", "results": rows,
                "md5_cpu_s_per_gib": round(floor, 3), "python": platform.python_version(),
                "cpus": os.cpu_count(),
            }, indent=2))
    finally:
        if moto is not None:
            moto.stdin.close()
            moto.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(args, s3_name: str, rows: dict, floor: float) -> None:
    print(f"\nupload of {args.size_mib} MiB, parts of {args.part_size_mib} MiB, concurrency {args.concurrency}, "
          f"median of {args.repeat}; S3: {s3_name}; {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'method':<11} {'wall s':>8} {'MB/s':>8} {'CPU s':>8} {'CPU s/GiB':>10}")
    for method, r in rows.items():
        print(f"{method:<11} {r['wall_s']:>8.2f} {r['throughput_mb_s']:>8.1f} {r['cpu_s']:>8.2f} "
              f"{r['cpu_s_per_gib']:>10.3f}")
    print(f"{'MD5 floor':<11} {'':>8} {'':>8} {'':>8} {floor:>10.3f}   (hashlib MD5 alone; only oarepo-s3 hashes)")
    ours, aws, boto = rows["oarepo-s3"], rows["aws-cli"], rows["boto3"]
    speed = ours["throughput_mb_s"] / aws["throughput_mb_s"]
    cpu = ours["cpu_s_per_gib"] / aws["cpu_s_per_gib"]
    print(f"\nthroughput vs aws-cli: {speed:.2f}x; vs boto3: {ours['throughput_mb_s'] / boto['throughput_mb_s']:.2f}x")
    print(f"CPU/GiB vs aws-cli: {cpu:.2f}x; vs boto3: {ours['cpu_s_per_gib'] / boto['cpu_s_per_gib']:.2f}x; "
          f"without the MD5 floor: {(ours['cpu_s_per_gib'] - floor) / aws['cpu_s_per_gib']:.2f}x")
    print(f"GOAL throughput >= 1.2x aws-cli: {speed:.2f}x {'PASS' if speed >= 1.2 else 'FAIL'}")
    print(f"GOAL CPU/GiB <= 0.5x aws-cli: {cpu:.2f}x {'PASS' if cpu <= 0.5 else 'FAIL'}")
    speeds = [r["throughput_mb_s"] for r in rows.values()]
    if max(speeds) <= 1.15 * min(speeds):
        print(f"note: all three are within {100 * (max(speeds) / min(speeds) - 1):.0f}% of each other: the S3 "
              "server, not the clients, is likely the bottleneck (moto is a Python server; try --s3-endpoint).")


if __name__ == "__main__":
    sys.exit(main())
