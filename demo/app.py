"""The demo's Invenio app: files-rest + invenio-s3 + records-files + oarepo-s3."""

from __future__ import annotations

from flask import Flask
from flask_babel import Babel
from invenio_db import InvenioDB
from invenio_files_rest import InvenioFilesREST
from invenio_files_rest.views import blueprint as files_rest_blueprint
from invenio_records import InvenioRecords
from invenio_records_files import InvenioRecordsFiles
from invenio_s3 import InvenioS3

from oarepo_s3 import OARepoS3


def allow_all_permissions(*args, **kwargs):
    """files-rest permission factory of the demo: anyone may read (no accounts yet)."""

    class Allow:
        def can(self):
            return True

    return Allow()


def create_demo_app(*, database_uri: str, s3_endpoint: str, access_key: str, secret_key: str) -> Flask:
    """Build the app; every setting a real deployment would put in invenio.cfg is here."""
    app = Flask("oarepo_s3_demo")
    app.config.update(
        SECRET_KEY="demo-only-secret",
        SQLALCHEMY_DATABASE_URI=database_uri,
        SQLALCHEMY_TRACK_MODIFICATIONS=False,
        FILES_REST_STORAGE_FACTORY="oarepo_s3.storage.s3_storage_factory",
        FILES_REST_PERMISSION_FACTORY="demo.app.allow_all_permissions",
        S3_ENDPOINT_URL=s3_endpoint,
        S3_ACCESS_KEY_ID=access_key,
        S3_SECRET_ACCESS_KEY=secret_key,
        S3_CONFIG_EXTRA={
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        },
    )
    Babel(app)
    InvenioDB(app)
    InvenioRecords(app)
    InvenioFilesREST(app)
    InvenioRecordsFiles(app)
    InvenioS3(app)
    OARepoS3(app)
    app.register_blueprint(files_rest_blueprint)
    return app
