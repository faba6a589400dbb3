"""Start the demo: embedded S3 (moto), SQLite, two users with tokens, a draft, and the app.

    python -m demo [--port 5000] [--s3-port 9000] [--data-dir .demo] [--info-file FILE]

The embedded S3 keeps its data in memory, so the database is created afresh
at every start too (the two must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import warnings
from pathlib import Path

# Known, harmless warnings of invenio-oauth2server and invenio-records on every start.
warnings.filterwarnings("ignore", "You are overriding the default OAuthlib", RuntimeWarning)
warnings.filterwarnings("ignore", "nested transaction already deassociated", Warning)

BUCKET = "oarepo-demo"
ACCESS_KEY = "demo-access-key"
SECRET_KEY = "demo-secret-key"
USERS = {
    "demo@example.org": "demo-password",
    "other@example.org": "other-password",
}


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_s3(port: int) -> tuple[object, str]:
    """Start moto's S3 on 127.0.0.1 with the demo bucket (CORS lets browsers read ETags)."""
    os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(5 * 1024 * 1024)  # before moto is imported
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1", config=Config(signature_version="s3v4"),
    )
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT", "HEAD"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600,
    }]})
    return server, endpoint


def seed_database(app) -> dict:
    """Tables, the files location, the demo users with tokens, and one draft."""
    from invenio_accounts.utils import hash_password
    from invenio_db import db
    from invenio_files_rest.models import Location
    from invenio_oauth2server.models import Token

    from oarepo_s3.drafts import create_draft

    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.add(Location(name="default-s3", uri=f"s3://{BUCKET}", default=True))
        datastore = app.extensions["security"].datastore
        info = {}
        for email, password in USERS.items():
            user = datastore.create_user(email=email, password=hash_password(password), active=True)
            db.session.flush()
            token = Token.create_personal(f"demo token of {email}", user.id, is_internal=False)
            info[email] = {"id": user.id, "password": password, "token": token.access_token}
        db.session.commit()
        draft = create_draft(info["demo@example.org"]["id"], {"title": "My first dataset"})
        info["draft_id"] = draft.pid_value
        return info


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="run-demo.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=5000, help="port of the web app (default 5000)")
    parser.add_argument("--s3-port", type=int, default=9000, help="port of the embedded S3 (default 9000)")
    parser.add_argument("--data-dir", default=".demo", help="where the SQLite database lives (default .demo)")
    parser.add_argument("--info-file", help="write URLs, users and tokens as JSON to this file")
    args = parser.parse_args(argv)

    for name, port in (("--port", args.port), ("--s3-port", args.s3_port)):
        if not port_is_free(port):
            print(f"error: port {port} is busy; choose another with {name}", file=sys.stderr)
            return 2

    from werkzeug.serving import make_server

    from .app import create_app

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    s3, s3_endpoint = start_s3(args.s3_port)
    url = f"http://127.0.0.1:{args.port}"
    app = create_app({
        "SECRET_KEY": "demo-only-secret",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{data_dir / 'demo.db'}",
        "S3_ENDPOINT_URL": s3_endpoint,
        "S3_ACCESS_KEY_ID": ACCESS_KEY,
        "S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }, sqlite_immediate=True)
    seeded = seed_database(app)
    demo, other = seeded["demo@example.org"], seeded["other@example.org"]
    draft_url = f"{url}{app.config['OAREPO_S3_DRAFTS_URL_PREFIX']}/{seeded['draft_id']}"
    info = {
        "url": url, "s3_endpoint": s3_endpoint, "bucket": BUCKET,
        "user": "demo@example.org", "password": demo["password"], "token": demo["token"],
        "draft_id": seeded["draft_id"], "draft_url": draft_url,
        "other_user": "other@example.org", "other_password": other["password"], "other_token": other["token"],
    }
    (data_dir / "info.json").write_text(json.dumps(info, indent=2))
    if args.info_file:
        Path(args.info_file).write_text(json.dumps(info, indent=2))
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    print(f"""
oarepo-s3 demo is running
  app          {url}
  draft        {draft_url}
  embedded S3  {s3_endpoint}   (bucket {BUCKET})
  user         demo@example.org / {demo['password']}   token {demo['token']}
  second user  other@example.org / {other['password']}   token {other['token']}

Upload a file straight to S3 through the REST API (the app only signs URLs):
  .venv/bin/python -m demo.example --draft {draft_url} --token {demo['token']} --size-mib 42

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
