"""Upload a file to the running demo with the Python API and plain HTTP PUTs.

    python -m demo.example [--file PATH | --size-mib N] [--data-dir .demo]

Creates a record, starts a MultipartUpload, PUTs each part straight to the
presigned S3 URLs, completes, then downloads the file back through the app's
302 redirect and compares the bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.example", description=__doc__.split("\n")[0])
    parser.add_argument("--file", type=Path, help="file to upload (default: random bytes)")
    parser.add_argument("--size-mib", type=int, default=42, help="size of the random file (default 42)")
    parser.add_argument("--data-dir", default=".demo")
    args = parser.parse_args(argv)

    info_file = Path(args.data_dir) / "info.json"
    if not info_file.exists():
        print(f"error: {info_file} not found: start the demo first (./run-demo.sh)", file=sys.stderr)
        return 2
    info = json.loads(info_file.read_text())

    from invenio_db import db
    from invenio_records_files.api import Record

    from oarepo_s3.api import MultipartUpload
    from oarepo_s3.service import ReportedPart, complete_upload

    from .app import create_demo_app

    path = args.file
    if path is None:
        path = Path(tempfile.mkdtemp()) / "random.bin"
        path.write_bytes(os.urandom(args.size_mib * 1024 * 1024))
    app = create_demo_app(database_uri=info["database_uri"], s3_endpoint=info["s3_endpoint"],
                          access_key=info["access_key"], secret_key=info["secret_key"])
    with app.app_context():
        record = Record.create({"title": f"demo upload of {path.name}"})
        mu = MultipartUpload(key=path.name, base_uri=record.files.bucket.location.uri, expires=3600,
                             size=path.stat().st_size, part_size=None)
        record.files[path.name] = mu
        record.commit()
        db.session.commit()
        session = mu.session
        print(f"started upload {session['upload_id']}: {session['num_chunks']} parts of {session['chunk_size']} bytes")

        started = time.monotonic()
        parts = []
        with path.open("rb") as fp, requests.Session() as http:
            for number, url in enumerate(session["parts_url"], start=1):
                response = http.put(url, data=fp.read(session["chunk_size"]), timeout=300)
                response.raise_for_status()
                parts.append(ReportedPart(number, response.headers["ETag"]))
                print(f"  part {number}/{session['num_chunks']} sent")
        row = complete_upload(session["id"], parts)
        elapsed = time.monotonic() - started
        print(f"completed in {elapsed:.1f} s; checksum {row.checksum}")
        download_url = f"{info['url']}/files/{record.bucket_id}/{path.name}"

    response = requests.get(download_url, timeout=300)
    same = response.status_code == 200 and response.content == path.read_bytes()
    print(f"download {download_url} -> {response.status_code}, bytes identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
