"""Start the demo: S3, a database, two users with tokens, a draft, the cleanup schedule and the web app.

    python -m demo [--port 5000] [--s3-port 9000] [--data-dir .demo] [--info-file FILE]
                   [--bucket oarepo-demo] [--cleanup-interval 600] [--upload-expiry 86400]

Embedded by default: moto's S3 on 127.0.0.1 and SQLite, both keeping their
data in ``--data-dir`` across restarts (see :mod:`demo.s3snapshot`), as do
browser logins. With
``INVENIO_S3_ENDPOINT_URL`` (and ``INVENIO_S3_ACCESS_KEY_ID``,
``INVENIO_S3_SECRET_ACCESS_KEY``) in the environment, that S3 is used
instead (bucket ``--bucket``, created with CORS when missing; an existing
bucket's CORS is left as it is unless ``--set-cors``); with
``INVENIO_SQLALCHEMY_DATABASE_URI``, that database. Every other
``INVENIO_<KEY>`` variable sets config key ``<KEY>`` as in invenio-app.

What the demo writes (the database, the embedded S3's data, browser
sessions, its secret key, the info file with passwords and tokens) is
readable by its owner only.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import secrets
import signal
import socket
import sys
import warnings
from datetime import timedelta
from pathlib import Path

from simplekv.fs import FilesystemStore

# Known, harmless warnings of invenio-oauth2server and invenio-records on every start.
warnings.filterwarnings("ignore", "You are overriding the default OAuthlib", RuntimeWarning)
warnings.filterwarnings("ignore", "nested transaction already deassociated", Warning)

EMBEDDED_ACCESS_KEY = "demo-access-key"
EMBEDDED_SECRET_KEY = "demo-secret-key"
CORS_RULES = [{
    "AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT", "HEAD"],
    "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600,
}]
"""Browsers PUT parts straight to S3 and must read each part's ETag."""


class DemoError(Exception):
    """A problem the user can fix (busy port, unreachable S3...): printed without a traceback."""


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def config_from_environment(environ=os.environ) -> dict:
    """``INVENIO_<KEY>=value`` -> ``{KEY: value}``, values read as Python literals when they are ones."""
    config = {}
    for name, raw in environ.items():
        if name.startswith("INVENIO_") and len(name) > len("INVENIO_"):
            try:
                config[name[len("INVENIO_"):]] = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                config[name[len("INVENIO_"):]] = raw
    return config


def s3_client(config: dict):
    """A boto3 client for setting up the bucket (the app itself uses invenio-s3's settings)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=config["S3_ENDPOINT_URL"], aws_access_key_id=config.get("S3_ACCESS_KEY_ID"),
        aws_secret_access_key=config.get("S3_SECRET_ACCESS_KEY"),
        region_name=config.get("S3_REGION_NAME") or "us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )


def prepare_bucket(client, bucket: str, *, create: bool, set_cors: bool) -> str:
    """Make sure ``bucket`` exists; return a note for the banner.

    CORS (browsers PUT parts and read their ETags) is set on a bucket the
    demo creates, and on an existing one only with ``set_cors``: someone
    else's bucket keeps its rules. Without usable rules the note says so.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=bucket)
        existed = True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound") or not create:
            raise DemoError(f"bucket {bucket!r}: {e}") from None
        existed = False
    except BotoCoreError as e:
        raise DemoError(f"S3 at {client.meta.endpoint_url} cannot be reached: {e}") from None
    if not existed:
        client.create_bucket(Bucket=bucket)
    if not existed or set_cors:
        try:
            client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": CORS_RULES})
        except ClientError as e:
            return f"could not set the bucket's CORS ({e}); browsers need PUT allowed and ETag exposed"
        return "created" if not existed else "existing, CORS set (--set-cors)"
    if not browsers_can_upload(client, bucket):
        return ("existing; its CORS does not let browsers upload (PUT allowed, ETag exposed): "
                "the web page cannot upload until it does (run with --set-cors, or `invenio oarepo-s3 cors`)")
    return "existing, its CORS kept"


def browsers_can_upload(client, bucket: str) -> bool:
    """True when some CORS rule of ``bucket`` allows PUT and exposes ETag."""
    from botocore.exceptions import ClientError

    try:
        rules = client.get_bucket_cors(Bucket=bucket).get("CORSRules", [])
    except ClientError:
        return False
    return any("PUT" in r.get("AllowedMethods", []) and "etag" in {h.lower() for h in r.get("ExposeHeaders", [])}
               for r in rules)


def secret_key(data_dir: Path) -> str:
    """The demo's SECRET_KEY: random, made once and kept in the data directory (owner-only)."""
    path = data_dir / "secret-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


def write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically, readable by its owner only (it holds passwords and tokens)."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(partial, 0o600)  # an older file of that name may have other bits
    partial.replace(path)


def start_embedded_s3(port: int, data_dir: Path, bucket: str):
    """moto's S3 on 127.0.0.1:port, with the data of the previous run; returns (server, snapshotter, config)."""
    os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(5 * 1024 * 1024)  # S3's real minimum, before moto is imported
    from moto.server import ThreadedMotoServer

    from . import moto_streaming, s3snapshot

    moto_streaming.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    config = {"S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", "S3_ACCESS_KEY_ID": EMBEDDED_ACCESS_KEY,
              "S3_SECRET_ACCESS_KEY": EMBEDDED_SECRET_KEY}
    client = s3_client(config)
    state_dir = data_dir / "s3"
    s3snapshot.load(state_dir, lambda name: client.create_bucket(Bucket=name))
    prepare_bucket(client, bucket, create=True, set_cors=True)  # the embedded S3 is the demo's own
    return server, s3snapshot.Snapshotter(state_dir, interval=30), config


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="run-demo.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=5000, help="port of the web app (default 5000)")
    parser.add_argument("--s3-port", type=int, default=9000, help="port of the embedded S3 (default 9000)")
    parser.add_argument("--data-dir", default=".demo",
                        help="where the database and the embedded S3's data live (default .demo)")
    parser.add_argument("--info-file", help="write URLs, users, passwords, tokens and the draft as JSON to this file")
    parser.add_argument("--bucket", default="oarepo-demo", help="S3 bucket for the files (default oarepo-demo)")
    parser.add_argument("--cleanup-interval", type=float, default=600,
                        help="seconds between runs of the expired-upload cleanup (default 600)")
    parser.add_argument("--upload-expiry", type=int, default=None,
                        help="seconds an upload may stay in progress (default: 1 day)")
    parser.add_argument("--set-cors", action="store_true",
                        help="replace an existing external bucket's CORS with rules that let browsers upload")
    return parser.parse_args(argv)


def _stop_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or SIGTERM)."""
    args = parse_args(argv)
    # Keep the terminal for the banner: no per-request lines from the two servers.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    env_config = config_from_environment()
    external_s3 = "S3_ENDPOINT_URL" in env_config
    ports = [("--port", args.port)] + ([] if external_s3 else [("--s3-port", args.s3_port)])
    for option, port in ports:
        if not port_is_free(port):
            print(f"error: port {port} is busy (is the demo already running?); choose another with {option}",
                  file=sys.stderr)
            return 2
    # Ctrl-C stops the demo even where SIGINT was ignored (e.g. started with `&` from a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        return run(args, env_config, external_s3)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def run(args, env_config: dict, external_s3: bool) -> int:
    from werkzeug.serving import make_server

    from . import seed
    from .app import create_app
    from .schedule import CleanupSchedule
    from .web import blueprint as web_blueprint

    data_dir = Path(args.data_dir).resolve()
    os.umask(0o077)  # everything the demo writes (database, S3 data, sessions, secrets): the owner's only
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    s3_server = snapshotter = None
    if external_s3:
        s3_config = {}
        bucket_note = prepare_bucket(s3_client(env_config), args.bucket, create=True, set_cors=args.set_cors)
    else:
        s3_server, snapshotter, s3_config = start_embedded_s3(args.s3_port, data_dir, args.bucket)
        bucket_note = f"embedded, data kept in {data_dir / 's3'}"
    url = f"http://127.0.0.1:{args.port}"
    config = {
        "SECRET_KEY": secret_key(data_dir),
        # Links and stored URLs name the demo's own host, never a Host header a client made up.
        "TRUSTED_HOSTS": ["127.0.0.1", "localhost"],
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{data_dir / 'demo.db'}",
        **s3_config,
        **env_config,
    }
    if args.upload_expiry is not None:
        expiry = timedelta(seconds=args.upload_expiry)
        config["OAREPO_S3_MULTIPART_EXPIRES"] = expiry
        config["OAREPO_S3_MULTIPART_MIN_EXPIRES"] = min(expiry, timedelta(minutes=1))
    # Browser logins are kept in the data directory too: signed-in users stay signed in across restarts.
    sessions = FilesystemStore(str(data_dir / "sessions"))
    os.makedirs(sessions.root, exist_ok=True)
    app = create_app(config, session_store=sessions, sqlite_immediate=True)
    app.register_blueprint(web_blueprint)
    migration = seed.migrate(app)
    seed.ensure_location(app, args.bucket)
    users = seed.ensure_users(app)
    demo, other = users["demo@example.org"], users["other@example.org"]
    draft_id = seed.ensure_draft(app, demo["id"], data_dir / "seed.json")
    s3_endpoint = app.config["S3_ENDPOINT_URL"]
    draft_url = f"{url}{app.config['OAREPO_S3_DRAFTS_URL_PREFIX']}/{draft_id}"
    info = {
        "url": url, "s3_endpoint": s3_endpoint, "bucket": args.bucket,
        "user": "demo@example.org", "password": demo["password"], "token": demo["token"],
        "draft_id": draft_id, "draft_url": draft_url, "draft_page": f"{url}/drafts/{draft_id}",
        "other_user": "other@example.org", "other_password": other["password"], "other_token": other["token"],
    }
    try:
        server = make_server("127.0.0.1", args.port, app, threaded=True)
    except OSError as e:
        if s3_server is not None:
            s3_server.stop()
        raise DemoError(f"port {args.port} is busy ({e.strerror}); choose another with --port") from None
    cleanup = CleanupSchedule(app, args.cleanup_interval)
    cleanup.start()
    if snapshotter is not None:
        snapshotter.start()
    database = app.config["SQLALCHEMY_DATABASE_URI"]
    if "@" in database:  # do not print a password
        database = database.split("://", 1)[0] + "://…@" + database.rsplit("@", 1)[1]
    print(f"""
oarepo-s3 demo is running
  web page     {url}   (sign in, upload with Uppy)
  draft        {url}/drafts/{draft_id}
  REST API     {draft_url}
  S3           {s3_endpoint}   bucket {args.bucket} ({bucket_note})
  database     {database} ({migration})
  cleanup      expired uploads are cleaned up every {args.cleanup_interval:g} s
  user         demo@example.org / {demo['password']}   token {demo['token']}
  second user  other@example.org / {other['password']}   token {other['token']}

Upload files straight to S3 from the command line (the app only signs URLs):
  .venv/bin/oarepo-s3 upload FILE_OR_DIR --draft {draft_url} --token {demo['token']}
or upload random bytes and download them back to compare:
  .venv/bin/python -m demo.example --draft {draft_url} --token {demo['token']} --size-mib 42

Ctrl-C stops everything (data stays in {data_dir}).
""", flush=True)
    # Written last: scripts waiting for this file may use the demo at once.
    for path in [data_dir / "info.json"] + ([Path(args.info_file)] if args.info_file else []):
        write_private(path, json.dumps(info, indent=2))
    try:
        server.serve_forever()  # returns on Ctrl-C (werkzeug catches the KeyboardInterrupt)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping", file=sys.stderr, flush=True)
        server.server_close()
        cleanup.stop()
        if s3_server is not None:
            s3_server.stop()
            snapshotter.stop()
            print(f"embedded S3 saved in {data_dir / 's3'}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
