"""The app the demo runs (and the REST tests and benchmarks use): a small Invenio API app.

Everything a real deployment would put in ``invenio.cfg`` is passed in as
config; the extensions are the ones an Invenio API app has for accounts
(session cookies), OAuth2 personal tokens, access control, records with
files, invenio-s3 and oarepo-s3.
"""

from __future__ import annotations

from flask import Flask
from flask_babel import Babel
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

from oarepo_s3 import OARepoS3
from oarepo_s3.views import create_drafts_blueprint, create_records_blueprint

DEFAULTS = {
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "FILES_REST_STORAGE_FACTORY": "oarepo_s3.storage.s3_storage_factory",
    "FILES_REST_PERMISSION_FACTORY": "demo.app.files_rest_permission",
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
}


def files_rest_permission(*args, **kwargs):
    """files-rest's own /files API is not used by the demo's clients: deny it to everyone."""

    class Deny:
        def can(self):
            return False

    return Deny()


def configure_sqlite(engine, *, immediate: bool = False) -> None:
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
    def on_connect(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA busy_timeout=10000")

    @event.listens_for(engine, "begin")
    def on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_minimal_app(config: dict, name: str = "oarepo_s3_minimal") -> Flask:
    """Files, records with files, invenio-s3 and oarepo-s3 only: what tests, workers and benchmarks need."""
    app = Flask(name)
    app.config.update({k: v for k, v in DEFAULTS.items() if not k.startswith(("ACCOUNTS_", "MAIL_", "WTF_"))})
    app.config.update(config)
    Babel(app)
    InvenioDB(app)
    InvenioRecords(app)
    InvenioFilesREST(app)
    InvenioRecordsFiles(app)
    InvenioS3(app)
    OARepoS3(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            configure_sqlite(db.engine)
    return app


def create_app(
    config: dict, *, session_store=None, files_rest_api: bool = False, sqlite_immediate: bool = False
) -> Flask:
    """Build the app from ``config`` (SQLALCHEMY_DATABASE_URI, S3_*, SECRET_KEY...).

    :param session_store: a simplekv store for login sessions (default: invenio-accounts', in memory).
    :param files_rest_api: also mount files-rest's own ``/files`` API.
    :param sqlite_immediate: on SQLite, start every transaction with ``BEGIN IMMEDIATE``.
    """
    app = Flask("oarepo_s3_demo")
    app.config.update(DEFAULTS)
    app.config.update(config)
    app.config.setdefault("SECURITY_PASSWORD_SALT", app.config["SECRET_KEY"])
    # Translations are not needed by an API; loading them all pulls in invenio-search.
    InvenioI18N(app, entry_point_group=None)
    InvenioDB(app)
    if session_store is not None:  # invenio-accounts takes its store from this factory (a sessionstore= is ignored)
        app.config["ACCOUNTS_SESSION_STORE_FACTORY"] = lambda _app: session_store
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
    app.register_blueprint(create_rest_blueprint(app))
    app.register_blueprint(create_drafts_blueprint(app))
    app.register_blueprint(create_records_blueprint(app))
    if files_rest_api:
        app.register_blueprint(files_rest_blueprint)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            configure_sqlite(db.engine, immediate=sqlite_immediate)
    return app
