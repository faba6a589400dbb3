"""Shared fixtures: a real S3 server over HTTP, an Invenio app, a database.

- ``s3_backend``: every test that touches S3 (``s3_server``, ``s3_client``,
  ``location``, ``app``...) runs once per S3 implementation, chosen with
  ``OAREPO_S3_TEST_BACKENDS=moto,ceph`` (default: both):

  - ``moto``: moto in server mode on 127.0.0.1, enforcing S3's real 5 MiB
    minimum part size. It checks neither signatures nor expiry.
  - ``ceph``: a single-node Ceph RADOS Gateway started once per session by
    scripts/ceph-rgw.sh (installs Debian's Ceph packages when missing, as
    root) in a temporary directory, on free ports. It checks signatures,
    expiry and Content-MD5, and keeps S3's 5 MiB minimum part size (tests
    lower it for themselves with :meth:`S3Backend.rgw_config`).

  A backend that does not start fails the run: it is never skipped.
  Modules named ``test_ceph_*.py`` run on Ceph only (deselected, with a
  note in the header, when ``ceph`` is not among the backends).
- ``database_uri``: each module runs on SQLite and on PostgreSQL (a real
  server the session starts with scripts/postgres.sh); choose with
  ``OAREPO_S3_TEST_DATABASES=sqlite,postgresql``. A server that does not
  start fails the run: it is never skipped.
- ``app``: a minimal Invenio API app with files-rest, invenio-s3,
  records-files and oarepo-s3 on that database.
- ``location``: a fresh S3 bucket and the default files location pointing
  at it, tables created anew for each test.

Test ids name the S3 backend, then the database: ``[moto-sqlite]``,
``[moto-postgresql]``, ``[ceph-postgresql]``. The Ceph lane runs on one
database only (why: see ``_ceph_databases``); ``OAREPO_S3_TEST_CEPH_DATABASES``
changes that.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# moto reads this at import time; pin S3's real minimum so tests see real limits.
os.environ["S3_UPLOAD_PART_MIN_SIZE"] = str(5 * 1024 * 1024)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

import boto3
import pytest
from botocore.config import Config
from invenio_db import db as db_
from invenio_files_rest.models import Location
from moto.server import ThreadedMotoServer

from oarepo_s3.app import create_app

from .helpers import LiveServer

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent

# --- S3 servers ----------------------------------------------------------------

S3_BACKEND_NAMES = ("moto", "ceph")
BACKENDS = [b.strip() for b in os.environ.get("OAREPO_S3_TEST_BACKENDS", "moto,ceph").split(",") if b.strip()]

# The lanes: moto x every database, Ceph x ONE database (PostgreSQL, the
# production database; the first selected one when PostgreSQL is not).
# Why not the full 2 x 2 matrix: each lane of the whole suite (tests/rest
# included) costs 70-95 s on 2 cores, mostly per-test table set-up, and the
# suite keeps growing. What the Ceph lane adds is S3 behaviour (signatures,
# expiry, error codes, the empty completion ETag); what the database lanes
# add is locking and transactions. Neither depends on the other, so
# ceph-sqlite would re-test what moto-sqlite and ceph-postgresql already
# cover. OAREPO_S3_TEST_CEPH_DATABASES=sqlite,postgresql runs the full matrix.
CEPH_DATABASES_SETTING = os.environ.get("OAREPO_S3_TEST_CEPH_DATABASES", "")


def _ceph_databases() -> list[str]:
    """The databases the Ceph lane runs on (see above)."""
    if CEPH_DATABASES_SETTING.strip():
        return [d.strip() for d in CEPH_DATABASES_SETTING.split(",") if d.strip()]
    return ["postgresql"] if "postgresql" in DATABASES else DATABASES[:1]


CEPH_ONLY_PREFIX = "test_ceph_"
"""Modules whose name starts so run only on the ``ceph`` backend."""


@dataclass(frozen=True)
class S3Backend:
    """A running S3 server the tests talk to."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    ceph_dir: Path | None = None
    """Ceph RGW only: the state directory of scripts/ceph-rgw.sh (admin sockets in ``run/``)."""

    def rgw_config_get(self, option: str) -> str:
        """Read a radosgw setting through its admin socket (Ceph only)."""
        import json

        return json.loads(self._rgw_admin("config", "get", option))[option]

    @contextmanager
    def rgw_config(self, option: str, value):
        """Change a radosgw setting at runtime for a ``with`` block, then restore it (Ceph only).

        Only for settings that take effect at once (``can_update_at_runtime``),
        e.g. ``rgw_multipart_min_part_size``, which RGW reads at each
        CompleteMultipartUpload.
        """
        old = self.rgw_config_get(option)
        self._rgw_admin("config", "set", option, str(value))
        try:
            yield
        finally:
            self._rgw_admin("config", "set", option, old)

    def radosgw_admin(self, *args: str) -> str:
        """Run ``radosgw-admin`` against this gateway (Ceph only), e.g. to create a tenant user."""
        if self.ceph_dir is None:
            raise RuntimeError(f"the {self.name} backend is not a Ceph RGW")
        done = subprocess.run(
            ["radosgw-admin", "-c", str(self.ceph_dir / "ceph.conf"), *args], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"radosgw-admin {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def _rgw_admin(self, *args: str) -> str:
        if self.ceph_dir is None:
            raise RuntimeError(f"the {self.name} backend is not a Ceph RGW")
        socket_path = self.ceph_dir / "run" / "client.rgw.asok"
        done = subprocess.run(
            ["ceph", "--admin-daemon", str(socket_path), *args], capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(f"ceph --admin-daemon {socket_path} {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 as a real HTTP server on 127.0.0.1 (started at most once a session)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield S3Backend("moto", f"http://{host}:{port}", "testing", "testing")
    server.stop()


CEPH_DNS_NAME = "s3.ceph.test"
"""The gateway's ``rgw_dns_name``: ``Host: BUCKET.s3.ceph.test`` is virtual-host addressing.

Nothing resolves ``*.ceph.test``; tests/test_ceph_addressing.py resolves it to 127.0.0.1 itself.
"""


@pytest.fixture(scope="session")
def ceph_rgw():
    """A throw-away Ceph RADOS Gateway on 127.0.0.1 (started at most once a session).

    Runs scripts/ceph-rgw.sh in a temporary directory on free ports; the
    script installs Ceph's Debian packages first when they are missing (as
    root). If it does not come up, every Ceph test fails with the log tail.
    """
    base = Path(tempfile.mkdtemp(prefix="oarepo-s3-ceph-"))
    state = base / "rgw"
    script = str(ROOT / "scripts" / "ceph-rgw.sh")
    port, mon_port = _free_ports(2)
    env = {**os.environ, "CEPH_RGW_PORT": str(port), "CEPH_RGW_MON_PORT": str(mon_port),
           "CEPH_RGW_DNS_NAME": CEPH_DNS_NAME}
    try:
        started = subprocess.run([script, "start", str(state)], capture_output=True, text=True, env=env, timeout=900)
    except subprocess.TimeoutExpired as e:
        started = subprocess.CompletedProcess(
            e.cmd, 124, e.stdout or "", f"{e.stderr or ''}\ntimed out after {e.timeout}s"
        )
    exports = dict(
        word.split("=", 1) for word in shlex.split(started.stdout) if "=" in word
    ) if started.returncode == 0 else {}
    if "S3_ENDPOINT_URL" not in exports:
        lines = started.stderr.splitlines()
        errors = "\n".join(line for line in lines if "ERROR" in line)
        tail = "\n".join(lines[-60:])
        pytest.fail(
            f"Ceph RGW did not start ({script} start {state} exited {started.returncode}; the ceph backend "
            f"was selected by OAREPO_S3_TEST_BACKENDS={','.join(BACKENDS)}):\n{errors}\n"
            f"--- last lines of its output and logs ---\n{tail}\n{started.stdout}",
            pytrace=False,
        )
    try:
        yield S3Backend(
            "ceph",
            exports["S3_ENDPOINT_URL"],
            exports["AWS_ACCESS_KEY_ID"],
            exports["AWS_SECRET_ACCESS_KEY"],
            exports.get("AWS_DEFAULT_REGION", "us-east-1"),
            ceph_dir=state,
        )
    finally:
        subprocess.run([script, "stop", str(state)], capture_output=True, text=True, timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", params=BACKENDS)
def s3_backend(request) -> S3Backend:
    """The S3 implementation under test (parametrised: every S3 test runs on each)."""
    return request.getfixturevalue({"moto": "moto_s3", "ceph": "ceph_rgw"}[request.param])


@pytest.fixture(scope="session")
def s3_server(s3_backend):
    """The S3 endpoint URL (``http://127.0.0.1:<port>``) of the backend under test."""
    return s3_backend.endpoint_url


@pytest.fixture(scope="session")
def s3_credentials(s3_backend):
    """Keys the app and the test's own S3 client use."""
    return {"access_key": s3_backend.access_key, "secret_key": s3_backend.secret_key, "region": s3_backend.region}


@pytest.fixture(scope="session")
def s3_client(s3_server, s3_credentials):
    """A boto3 client for the test to look at S3 directly (never used by the app).

    ``signature_version="s3v4"`` is needed for Ceph (boto3 would presign SigV2
    for a custom endpoint otherwise); checksums only when an operation needs them.
    """
    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id=s3_credentials["access_key"],
        aws_secret_access_key=s3_credentials["secret_key"],
        region_name=s3_credentials["region"],
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def pytest_configure(config):
    if not BACKENDS or set(BACKENDS) - set(S3_BACKEND_NAMES):
        raise pytest.UsageError(
            f"OAREPO_S3_TEST_BACKENDS={os.environ.get('OAREPO_S3_TEST_BACKENDS')!r}: "
            f"give a comma-separated list of {', '.join(S3_BACKEND_NAMES)}"
        )
    if "ceph" in BACKENDS and set(_ceph_databases()) - set(DATABASES):
        raise pytest.UsageError(
            f"OAREPO_S3_TEST_CEPH_DATABASES={CEPH_DATABASES_SETTING!r} names a database that "
            f"OAREPO_S3_TEST_DATABASES ({','.join(DATABASES)}) does not select"
        )
    config.addinivalue_line("markers", "s3_backends(*names): run only on these S3 backends (default: all selected)")


def pytest_report_header(config):
    lines = [
        f"S3 backends: {','.join(BACKENDS)} (OAREPO_S3_TEST_BACKENDS); "
        f"databases: {','.join(DATABASES)} (OAREPO_S3_TEST_DATABASES)"
    ]
    if "ceph" in BACKENDS:
        lines.append(f"ceph lane databases: {','.join(_ceph_databases())} (OAREPO_S3_TEST_CEPH_DATABASES)")
    else:
        lines.append(f"{CEPH_ONLY_PREFIX}*.py: deselected (ceph is not in OAREPO_S3_TEST_BACKENDS)")
    return lines


def _allowed_backends(item) -> tuple[str, ...] | None:
    marker = item.get_closest_marker("s3_backends")
    if marker is not None:
        return tuple(marker.args)
    if Path(str(item.fspath)).name.startswith(CEPH_ONLY_PREFIX):
        return ("ceph",)
    return None


def pytest_collection_modifyitems(config, items):
    """Deselect the lanes a test is not meant for: test_ceph_* on moto, Ceph on a second database.

    Deselected, not skipped: the test is not about that lane. A Ceph test
    with ``ceph`` selected runs, and fails if Ceph does not start.
    """
    ceph_databases = _ceph_databases()
    keep, drop = [], []
    for item in items:
        allowed = _allowed_backends(item)
        params = item.callspec.params if hasattr(item, "callspec") else {}
        backend = params.get("s3_backend")
        if allowed is not None and backend is not None and backend not in allowed:
            drop.append(item)
        elif backend == "ceph" and "database_uri" in params and params["database_uri"] not in ceph_databases:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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
    env = {**os.environ, "OAREPO_S3_PG_PORT": str(_free_ports(1)[0])}  # parallel runs must not collide
    started = subprocess.run([script, "start", f"{base}/data"], capture_output=True, text=True, env=env)
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
        # The API answers absolute links only for hosts it was configured for (else paths).
        "TRUSTED_HOSTS": ["127.0.0.1", "localhost"],
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
    # On SQLite: SAVEPOINTs and WAL (a live server thread writes while the test reads).
    yield create_app(app_config, name="oarepo_s3_tests", rest_api=False, files_rest_api=True)


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
