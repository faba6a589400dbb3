"""Start the demo: embedded S3 (moto), SQLite, and the app on 127.0.0.1.

    python -m demo [--port 5000] [--s3-port 9000] [--data-dir .demo]

Writes ``<data-dir>/info.json`` so that ``python -m demo.example`` can reach
the same S3 and database.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

BUCKET = "oarepo-demo"
ACCESS_KEY = "demo-access-key"
SECRET_KEY = "demo-secret-key"


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run-demo.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=5000, help="port of the web app (default 5000)")
    parser.add_argument("--s3-port", type=int, default=9000, help="port of the embedded S3 (default 9000)")
    parser.add_argument("--data-dir", default=".demo", help="where the SQLite database lives (default .demo)")
    args = parser.parse_args(argv)

    for name, port in (("--port", args.port), ("--s3-port", args.s3_port)):
        if not port_is_free(port):
            print(f"error: port {port} is busy; choose another with {name}", file=sys.stderr)
            return 2

    os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(5 * 1024 * 1024)  # before moto is imported
    import boto3
    from botocore.config import Config
    from invenio_db import db
    from invenio_files_rest.models import Location
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    from .app import create_demo_app

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=args.s3_port, verbose=False)
    s3.start()
    s3_endpoint = f"http://127.0.0.1:{args.s3_port}"
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1", config=Config(signature_version="s3v4"),
    )
    client.create_bucket(Bucket=BUCKET)
    # Browsers may PUT parts straight to S3 and must be able to read each part's ETag.
    client.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT", "HEAD"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600,
    }]})

    database_uri = f"sqlite:///{data_dir / 'demo.db'}"
    app = create_demo_app(database_uri=database_uri, s3_endpoint=s3_endpoint, access_key=ACCESS_KEY,
                          secret_key=SECRET_KEY)
    with app.app_context():
        db.drop_all()  # the embedded S3 starts empty, so the books must too
        db.create_all()
        db.session.add(Location(name="default-s3", uri=f"s3://{BUCKET}", default=True))
        db.session.commit()

    url = f"http://127.0.0.1:{args.port}"
    info = {"url": url, "s3_endpoint": s3_endpoint, "bucket": BUCKET, "database_uri": database_uri,
            "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    (data_dir / "info.json").write_text(json.dumps(info, indent=2))
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    print(f"""
oarepo-s3 demo is running
  app         {url}   (files REST API: {url}/files/<bucket-id>/<key>)
  embedded S3 {s3_endpoint}   bucket {BUCKET}
  database    {database_uri}

Try a direct multipart upload (bytes go straight to S3, the app only signs):
  .venv/bin/python -m demo.example --size-mib 42 --data-dir {args.data_dir}

Ctrl-C stops everything.
""", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
    finally:
        server.server_close()
        s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
