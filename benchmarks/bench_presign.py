"""How much faster oarepo_s3.presign signs UploadPart URLs than boto3 and invenio-s3.

Run::

    .venv/bin/python benchmarks/bench_presign.py [--parts 10000] [--repeat 5] [--json FILE]

(results go to benchmarks/results/presign.json unless ``--json`` says otherwise)

Signs ``--parts`` UploadPart URLs for one upload with each method:

* ``ours batch``  - ``SigV4Presigner.upload_part_urls`` (the production path);
* ``ours single`` - ``SigV4Presigner.upload_part_url`` once per part;
* ``boto3``       - ``client.generate_presigned_url("upload_part", ...)`` per part;
* ``invenio-s3``  - ``S3FSFileStorage.multipart_links`` (aiobotocore through
  s3fs, one event-loop round trip per part), inside a Flask app context;
* ``hmac floor``  - 4 chained HMAC-SHA256 and 1 SHA-256 per URL on inputs of
  the real sizes, with plain ``hmac``/``hashlib`` and no string building:
  about the hashing alone of a signer that re-derives its key for every URL
  (a complete one does a fifth HMAC).  Ours caches the key per day and so
  does less than this floor.

Methods run interleaved (rotating order) after a warm-up, and the median of
``--repeat`` runs is reported, so drift in machine load hits all of them
alike.  Presigning is local computation: the endpoint is never contacted,
so it points at the discard port.  Before timing, the first URLs of all
three real signers are compared at one frozen instant, so the table never
compares methods that compute different things.
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import hashlib
import hmac
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from unittest import mock

import boto3
import botocore.config
from flask import Flask
from invenio_s3 import InvenioS3
from invenio_s3.storage import S3FSFileStorage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from oarepo_s3.presign import SigV4Presigner

ENDPOINT = "http://127.0.0.1:9"
REGION = "us-east-1"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BUCKET = "bench-bucket"
KEY = "records/2f/9c/4b1e-7d2a/data/large-dataset.tar.zst"
UPLOAD_ID = "2~Qz8yVd1kYhR0tVbq6m0vXlJcA9sWm3Nf7LrUeTgHp4iKoB5xDjZy-CwE1aSuGnPq"
EXPIRES = 3600

Runner = Callable[[int], object]


def make_runners(app: Flask, clock: Callable[[], float] = time.time) -> dict[str, Runner]:
    """One callable per method: ``run(n)`` signs parts 1..n."""
    ours = SigV4Presigner(
        endpoint_url=ENDPOINT, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, clock=clock
    )
    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    def ours_batch(n: int) -> list[str]:
        return ours.upload_part_urls(BUCKET, KEY, UPLOAD_ID, range(1, n + 1), expires_in=EXPIRES)

    def ours_single(n: int) -> list[str]:
        return [ours.upload_part_url(BUCKET, KEY, UPLOAD_ID, i, expires_in=EXPIRES) for i in range(1, n + 1)]

    def boto(n: int) -> list[str]:
        return [
            client.generate_presigned_url(
                "upload_part",
                Params={"Bucket": BUCKET, "Key": KEY, "UploadId": UPLOAD_ID, "PartNumber": i},
                ExpiresIn=EXPIRES,
            )
            for i in range(1, n + 1)
        ]

    def invenio(n: int) -> list[str]:
        with app.app_context():
            storage = S3FSFileStorage(f"s3://{BUCKET}/{KEY}")
            return [p["url"] for p in storage.multipart_links(uploadId=UPLOAD_ID, parts=n)["parts"]]

    secret = ("AWS4" + SECRET_KEY).encode()
    canonical_head = (
        f"PUT\n/{BUCKET}/{KEY}\nX-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={ACCESS_KEY}%2F20250101%2F{REGION}%2Fs3%2Faws4_request"
        f"&X-Amz-Date=20250101T000000Z&X-Amz-Expires={EXPIRES}&X-Amz-SignedHeaders=host&partNumber="
    ).encode()
    canonical_tail = f"&uploadId={UPLOAD_ID}\nhost:127.0.0.1:9\n\nhost\nUNSIGNED-PAYLOAD".encode()
    sts_head = f"AWS4-HMAC-SHA256\n20250101T000000Z\n20250101/{REGION}/s3/aws4_request\n".encode()
    date, region = b"20250101", REGION.encode()

    def floor(n: int) -> int:
        """4 chained HMAC + 1 SHA-256 per URL on inputs the size of the real ones."""
        new, sha256 = hmac.new, hashlib.sha256
        total = 0
        for i in range(1, n + 1):
            digest = sha256(canonical_head + str(i).encode() + canonical_tail).hexdigest().encode()
            key = new(secret, date, sha256).digest()
            key = new(key, region, sha256).digest()
            key = new(key, b"s3", sha256).digest()
            total += new(key, sts_head + digest, sha256).digest()[0]
        return total

    return {
        "ours batch": ours_batch,
        "ours single": ours_single,
        "boto3": boto,
        "invenio-s3": invenio,
        "hmac floor": floor,
    }


def make_app() -> Flask:
    """The smallest Flask app invenio-s3's storage works in."""
    app = Flask("bench_presign")
    app.config.update(
        S3_ENDPOINT_URL=ENDPOINT,
        S3_ACCESS_KEY_ID=ACCESS_KEY,
        S3_SECRET_ACCESS_KEY=SECRET_KEY,
        S3_REGION_NAME=REGION,
        S3_UPLOAD_URL_EXPIRATION=EXPIRES,
    )
    InvenioS3(app)
    return app


def check_identical(app: Flask) -> None:
    """The real signers must produce the same URLs at one frozen instant."""
    instant = datetime.datetime(2025, 1, 1, 12, 0, 0)
    runners = make_runners(app, clock=lambda: float(calendar.timegm(instant.timetuple())))
    with mock.patch("botocore.auth.get_current_datetime", return_value=instant):
        results = {name: runners[name](3) for name in ("ours batch", "ours single", "boto3", "invenio-s3")}
    reference = results["ours batch"]
    for name, urls in results.items():
        if urls != reference:
            raise SystemExit(f"{name} signs differently from ours:\n  {urls[0]}\n  {reference[0]}")
    print(f"check: all signers produce identical URLs, e.g.\n  {reference[0]}\n")


def measure(runners: dict[str, Runner], parts: int, repeat: int) -> dict[str, list[float]]:
    """Seconds per run of each method, interleaved with a rotating order."""
    names = list(runners)
    for name in names:
        runners[name](min(parts, 200))
    timings: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runners[name](parts)
            timings[name].append(time.perf_counter() - start)
    return timings


def report(timings: dict[str, list[float]], parts: int, repeat: int) -> dict:
    """Print the table and the two targets; return everything for --json."""
    medians = {name: statistics.median(runs) for name, runs in timings.items()}
    ours = medians["ours batch"]
    rows = {
        name: {
            "runs_ms": [t * 1e3 for t in timings[name]],
            "median_ms": medians[name] * 1e3,
            "us_per_url": medians[name] / parts * 1e6,
            "ratio_vs_ours": medians[name] / ours,
        }
        for name in timings
    }
    print(f"{parts} UploadPart URLs, median of {repeat} interleaved runs")
    print(f"{'method':<14}{'total ms':>12}{'µs/URL':>10}{'vs ours':>10}")
    for name, row in rows.items():
        print(f"{name:<14}{row['median_ms']:>12.1f}{row['us_per_url']:>10.2f}{row['ratio_vs_ours']:>9.1f}x")
    targets = {
        "boto3/ours >= 50x": rows["boto3"]["ratio_vs_ours"],
        "invenio-s3/ours >= 100x": rows["invenio-s3"]["ratio_vs_ours"],
    }
    thresholds = {"boto3/ours >= 50x": 50, "invenio-s3/ours >= 100x": 100}
    print()
    for label, ratio in targets.items():
        print(f"TARGET {label}: {ratio:.1f}x {'PASS' if ratio >= thresholds[label] else 'FAIL'}")
    return {
        "parts": parts,
        "repeat": repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": {pkg: version(pkg) for pkg in ("boto3", "botocore", "aiobotocore", "s3fs", "invenio-s3")},
        "methods": rows,
        "targets": {
            label: {"ratio": r, "threshold": thresholds[label], "pass": r >= thresholds[label]}
            for label, r in targets.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, check, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--parts", type=int, default=10000, help="URLs per run (default 10000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per method; the median is reported (default 5)")
    parser.add_argument("--json", type=Path, help="result file (default benchmarks/results/presign.json)")
    args = parser.parse_args(argv)
    if not 1 <= args.parts <= 10000 or args.repeat < 1:
        parser.error("--parts must be 1..10000 (S3's part limit) and --repeat at least 1")

    app = make_app()
    check_identical(app)
    result = report(measure(make_runners(app), args.parts, args.repeat), args.parts, args.repeat)
    print()
    common.write_result("presign", result, args.json)


if __name__ == "__main__":
    main()
