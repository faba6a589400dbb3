"""Shared fixtures: a real S3 server over HTTP, an Invenio app, a database.

- ``s3_server``: moto in server mode on 127.0.0.1 (session-wide), enforcing
  S3's real 5 MiB minimum part size. moto checks neither signatures nor
  expiry: the Ceph RGW lane proves those.
- ``database_uri``: each module runs on SQLite and on PostgreSQL (a real
  server the session starts with scripts/postgres.sh); choose with
  ``OAREPO_S3_TEST_DATABASES=sqlite,postgresql``. A server that does not
  start fails the run: it is never skipped.
- ``app``: a minimal Invenio API app with files-rest, invenio-s3,
  records-files and oarepo-s3 on that database.
- ``location``: a fresh S3 bucket and the default files location pointing
  at it, tables created anew for each test.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from pathlib import Path

# moto reads this at import time; pin S3's real minimum so tests see real limits.
os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(5 * 1024 * 1024)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

import boto3  # noqa: E402
import pytest  # noqa: E402
from botocore.config import Config  # noqa: E402
from flask import Flask  # noqa: E402
from flask_babel import Babel  # noqa: E402
from invenio_db import InvenioDB, db as db_  # noqa: E402
from invenio_files_rest import InvenioFilesREST  # noqa: E402
from invenio_files_rest.models import Location  # noqa: E402
from invenio_files_rest.views import blueprint as files_rest_blueprint  # noqa: E402
from invenio_records import InvenioRecords  # noqa: E402
from invenio_records_files import InvenioRecordsFiles  # noqa: E402
from invenio_s3 import InvenioS3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from sqlalchemy import event  # noqa: E402

from oarepo_s3 import OARepoS3  # noqa: E402

from .helpers import LiveServer  # noqa: E402

MiB = 1024 * 1024


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 as a real HTTP server on 127.0.0.1; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_credentials():
    """Keys the app and the test's own S3 client use."""
    return {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="session")
def s3_client(s3_server, s3_credentials):
    """A boto3 client for the test to look at S3 directly (never used by the app)."""
    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id=s3_credentials["access_key"],
        aws_secret_access_key=s3_credentials["secret_key"],
        region_name=s3_credentials["region"],
        config=Config(
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _sqlite_savepoint_fix(engine):
    """Let SQLite honour SAVEPOINT (pysqlite's own transaction handling breaks nesting)."""

    @event.listens_for(engine, "connect")
    def do_connect(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def do_begin(conn):
        conn.exec_driver_sql("BEGIN")


ROOT = Path(__file__).resolve().parent.parent
DATABASES = [d.strip() for d in os.environ.get("OAREPO_S3_TEST_DATABASES", "sqlite,postgresql").split(",") if d.strip()]


@pytest.fixture(scope="session")
def postgresql_uri():
    """Start a throw-away PostgreSQL for the session (or use OAREPO_S3_TEST_PG_URI); yield its URI."""
    if os.environ.get("OAREPO_S3_TEST_PG_URI"):
        yield os.environ["OAREPO_S3_TEST_PG_URI"]
        return
    base = tempfile.mkdtemp(prefix="oarepo-s3-pg-")
    os.chmod(base, 0o755)  # the server runs as the 'postgres' user when we are root
    script = str(ROOT / "scripts" / "postgres.sh")
    started = subprocess.run([script, "start", f"{base}/data"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"PostgreSQL did not start:\n{started.stderr}", pytrace=False)
    uri = started.stdout.strip().split("=", 1)[1]
    os.environ["OAREPO_S3_TEST_PG_URI"] = uri
    yield uri
    subprocess.run([script, "stop", f"{base}/data"], check=False)
    os.environ.pop("OAREPO_S3_TEST_PG_URI", None)


@pytest.fixture(scope="module", params=DATABASES)
def database_uri(request, tmp_path_factory):
    """Every module that uses the database runs once per database kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    if request.param == "postgresql":
        return request.getfixturevalue("postgresql_uri")
    raise ValueError(f"unknown database {request.param!r} in OAREPO_S3_TEST_DATABASES")


@pytest.fixture(scope="module")
def app_config(s3_server, s3_credentials, database_uri):
    """Configuration of the test app; override per module to change a setting."""
    db_uri = database_uri
    return {
        "SECRET_KEY": "test-secret",
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": db_uri,
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "FILES_REST_STORAGE_FACTORY": "oarepo_s3.storage.s3_storage_factory",
        "FILES_REST_PERMISSION_FACTORY": "tests.helpers.allow_all",
        "S3_ENDPOINT_URL": s3_server,
        "S3_ACCESS_KEY_ID": s3_credentials["access_key"],
        "S3_SECRET_ACCESS_KEY": s3_credentials["secret_key"],
        "S3_REGION_NAME": s3_credentials["region"],
        # invenio-s3 (s3fs) must not add CRC checksums moto/Ceph may not want.
        "S3_CONFIG_EXTRA": {
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        },
    }


@pytest.fixture(scope="module")
def app(app_config):
    """A minimal Invenio API app with oarepo-s3 (shared by a module: set-up costs ~0.4 s)."""
    app = Flask("oarepo_s3_tests")
    app.config.update(app_config)
    Babel(app)
    InvenioDB(app)
    InvenioRecords(app)
    InvenioFilesREST(app)
    InvenioRecordsFiles(app)
    InvenioS3(app)
    OARepoS3(app)
    app.register_blueprint(files_rest_blueprint)
    with app.app_context():
        if db_.engine.dialect.name == "sqlite":
            _sqlite_savepoint_fix(db_.engine)
    yield app


@pytest.fixture()
def db(app):
    """Fresh tables for each test (commits inside the code under test are real)."""
    with app.app_context():
        db_.drop_all()
        db_.create_all()
        yield db_
        db_.session.remove()
        db_.drop_all()


@pytest.fixture()
def s3_bucket(s3_client):
    """A new, empty S3 bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def location(db, s3_bucket):
    """The default files location, pointing at the test's S3 bucket."""
    loc = Location(name="default-s3", uri=f"s3://{s3_bucket}", default=True)
    db.session.add(loc)
    db.session.commit()
    return loc


@pytest.fixture()
def live_server(app):
    """The app served over real HTTP on 127.0.0.1 (a thread), for requests to hit."""
    server = LiveServer(app)
    server.start()
    yield server
    server.stop()
