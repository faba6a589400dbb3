"""Upload a file into a draft through the REST API, then download it back and compare.

    python -m demo.example --draft URL --token TOKEN [--file PATH | --size-mib N]

Starts a multipart upload (``POST <draft>/files/?multipart=True``), PUTs each
part straight to its presigned S3 URL, completes, and follows the file's
``content`` link (a 302 to S3). The app sees only small JSON requests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import requests


def main(argv: list[str] | None = None) -> int:
    """Run the example; exit 0 when the downloaded bytes are identical."""
    parser = argparse.ArgumentParser(prog="python -m demo.example", description=__doc__.split("\n")[0])
    parser.add_argument("--draft", required=True, help="the draft's URL (printed by ./run-demo.sh)")
    parser.add_argument("--token", required=True, help="a personal access token")
    parser.add_argument("--file", type=Path, help="file to upload (default: random bytes)")
    parser.add_argument("--size-mib", type=int, default=42, help="size of the random file (default 42)")
    args = parser.parse_args(argv)

    path = args.file
    if path is None:
        path = Path(tempfile.mkdtemp()) / "random.bin"
        path.write_bytes(os.urandom(args.size_mib * 1024 * 1024))
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {args.token}"
    started = time.monotonic()
    r = api.post(f"{args.draft}/files/?multipart=True", json={"key": path.name, "size": path.stat().st_size},
                 timeout=60)
    if r.status_code != 201:
        print(f"error: {r.status_code} {r.text}", file=sys.stderr)
        return 1
    created = r.json()
    session = created["multipart_upload"]
    print(f"started upload of {path.name}: {session['num_chunks']} parts of {session['chunk_size']} bytes")
    parts = []
    with path.open("rb") as fp, requests.Session() as s3:  # no credentials go to S3
        for number, url in enumerate(session["parts_url"], start=1):
            response = s3.put(url, data=fp.read(session["chunk_size"]), timeout=300)
            response.raise_for_status()
            parts.append({"PartNum": number, "ETag": response.headers["ETag"]})
            print(f"  part {number}/{session['num_chunks']} sent")
    done = api.post(created["links"]["complete"], json={"parts": parts}, timeout=300)
    done.raise_for_status()
    print(f"completed in {time.monotonic() - started:.1f} s; checksum {done.json()['checksum']}")
    content_url = done.json()["links"]["content"]
    downloaded = api.get(content_url, timeout=300)
    same = downloaded.status_code == 200 and downloaded.content == path.read_bytes()
    print(f"download {content_url} -> {downloaded.status_code}, bytes identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
