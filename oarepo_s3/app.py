"""A small Invenio API app with oarepo-s3, for a standalone service, the tests and the benchmarks.

An Invenio instance does not need this module: its own app factory loads
oarepo-s3 from the entry points. This one builds the smallest app that
serves oarepo-s3 on its own, from a config dict (what ``invenio.cfg``
would hold): files-rest, records-files, invenio-s3 and oarepo-s3, and with
``rest_api`` also accounts (session cookies), OAuth2 personal tokens,
access control, PIDs and the draft-records REST API.

The demo (``demo/``) builds on it and adds its own parts; tests and
benchmarks use it directly, so a change to the demo cannot break them.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from invenio_access import InvenioAccess
from invenio_accounts import InvenioAccountsREST
from invenio_accounts.views.rest import create_rest_blueprint
from invenio_db import InvenioDB, db
from invenio_files_rest import InvenioFilesREST
from invenio_files_rest.views import blueprint as files_rest_blueprint
from invenio_i18n import InvenioI18N
from invenio_oauth2server import InvenioOAuth2Server, InvenioOAuth2ServerREST
from invenio_pidstore import InvenioPIDStore
from invenio_records import InvenioRecords
from invenio_records_files import InvenioRecordsFiles
from invenio_s3 import InvenioS3
from sqlalchemy import event
from sqlalchemy.engine import Engine

from .ext import OARepoS3
from .views import create_drafts_blueprint, create_records_blueprint

DEFAULTS: dict[str, Any] = {
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "FILES_REST_STORAGE_FACTORY": "oarepo_s3.storage.s3_storage_factory",
    "FILES_REST_PERMISSION_FACTORY": "oarepo_s3.app.deny_files_rest_api",
    # S3-compatible servers (Ceph, older MinIO) reject boto3's default CRC checksums.
    "S3_CONFIG_EXTRA": {
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    },
    "ACCOUNTS_USE_CELERY": False,
    "ACCOUNTS_SESSION_ACTIVITY_ENABLED": False,
    "MAIL_SUPPRESS_SEND": True,
    "RATELIMIT_ENABLED": False,
    "WTF_CSRF_ENABLED": False,
    # Browsers send the session cookie on top-level navigation only, not on other sites' requests.
    "SESSION_COOKIE_SAMESITE": "Lax",
}
"""Settings the app starts from; ``config`` overrides any of them."""


def deny_files_rest_api(*args: Any, **kwargs: Any) -> Any:
    """files-rest permission factory that denies everything: its own ``/files`` API is not this app's door."""

    class Deny:
        def can(self) -> bool:
            return False

    return Deny()


def configure_sqlite(engine: Engine, *, immediate: bool = False) -> None:
    """Make SQLite safe for a threaded server: real SAVEPOINTs and WAL journaling.

    pysqlite's own transaction handling breaks nested transactions, and with
    the default journal a reader blocks every writer ("database is locked").
    With ``immediate``, every transaction starts as ``BEGIN IMMEDIATE``, so
    concurrent writers wait (busy_timeout) instead of failing when a read
    transaction tries to become a write one; right for a server whose
    requests all end their transactions, wrong for a test thread that keeps
    a read transaction open while a server thread writes.
    """

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA busy_timeout=10000")

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_app(
    config: dict[str, Any],
    *,
    name: str = "oarepo_s3",
    rest_api: bool = True,
    files_rest_api: bool = False,
    sqlite_immediate: bool = False,
) -> Flask:
    """Build the app from ``config`` (SQLALCHEMY_DATABASE_URI, S3_*, SECRET_KEY...).

    :param rest_api: accounts, OAuth2 tokens, access control, PIDs and the draft-records API;
        without it only the files, records and storage extensions (a Celery worker, storage tests).
    :param files_rest_api: also mount files-rest's own ``/files`` API (its permission factory applies).
    :param sqlite_immediate: on SQLite, start every transaction with ``BEGIN IMMEDIATE``.
    """
    app = Flask(name)
    app.config.update(DEFAULTS)
    app.config.update(config)
    app.config.setdefault("SECURITY_PASSWORD_SALT", app.config.get("SECRET_KEY"))
    # Translations are not needed by an API; loading them all pulls in invenio-search.
    InvenioI18N(app, entry_point_group=None)
    InvenioDB(app)
    if rest_api:
        InvenioAccountsREST(app)
        InvenioAccess(app)
        InvenioOAuth2Server(app)
        InvenioOAuth2ServerREST(app)
        InvenioPIDStore(app)
    InvenioRecords(app)
    InvenioFilesREST(app)
    InvenioRecordsFiles(app)
    InvenioS3(app)
    OARepoS3(app)
    if rest_api:
        app.register_blueprint(create_rest_blueprint(app))
        app.register_blueprint(create_drafts_blueprint(app))
        app.register_blueprint(create_records_blueprint(app))
    if files_rest_api:
        app.register_blueprint(files_rest_blueprint)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            configure_sqlite(db.engine, immediate=sqlite_immediate)
    return app

