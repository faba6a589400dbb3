"""An app with invenio-records-resources' FileService and FileResource on our storage, and a record with files.

- ``app`` (module): :func:`oarepo_s3.app.create_app` (files-rest, invenio-s3,
  oarepo-s3 with ``FILES_REST_STORAGE_FACTORY =
  "oarepo_s3.storage.s3_storage_factory"``) plus what records-resources
  needs, and the FileResource blueprint at ``/rdm/records/<pid_value>/files``.
- ``db``: as tests/conftest.py's, plus the test record tables (kept out of
  ``db.metadata``, see :data:`tests.rdm.records.rdm_metadata`).
- ``record``: a record with files enabled (its bucket in the default S3
  location), created through the record API: nothing is indexed.
- ``rdm``: a small client for the FileResource on the live server.
"""

from __future__ import annotations

from dataclasses import dataclass

import celery._state
import pytest
import requests
from celery import Celery
from invenio_db import db as db_
from invenio_records_resources.services import FileService

from .app import create_rdm_app
from .records import RdmFileServiceConfig, RdmRecord, create_tables, drop_tables

MiB = 1024 * 1024


def _eager_celery() -> Celery:
    """A Celery app that runs tasks at once, in the caller (no broker, no worker).

    The FileService's commit schedules two tasks after its transaction
    (``TaskOp``): records-resources' ``extract_file_metadata`` and
    ``recompute_multipart_checksum_task``. They run eagerly here, in the
    request that committed, right after the database commit; a failing task
    fails that request (``task_eager_propagates``). Shared tasks resolve the
    *default* Celery app in the server's request threads, so this one is
    made the default for the module and the previous one restored after.
    """
    app = Celery("oarepo-s3-rdm-tests", set_as_current=False)
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    return app


@pytest.fixture(scope="module")
def app(app_config):
    """Our app plus records-resources' file service and resource (module-scoped, overrides tests/conftest.py's).

    See :func:`tests.rdm.app.create_rdm_app`; records-resources' tasks run eagerly (:func:`_eager_celery`).
    """
    app = create_rdm_app(app_config, name="oarepo_s3_rdm_tests")
    previous_celery = celery._state.default_app
    celery._state.set_default_app(_eager_celery())
    yield app
    celery._state.set_default_app(previous_celery)


@pytest.fixture()
def file_service(app) -> FileService:
    """The FileService instance the resource serves (records-resources' own class)."""
    return app.extensions["invenio-records-resources"].registry.get(RdmFileServiceConfig.service_id)


@pytest.fixture()
def db(app):
    """Fresh tables for each test, the test record tables included (created after, dropped before, the rest)."""
    with app.app_context():
        drop_tables()
        db_.drop_all()
        db_.create_all()
        create_tables()
        yield db_
        db_.session.remove()
        drop_tables()
        db_.drop_all()


@dataclass(frozen=True)
class CreatedRecord:
    """What the ``record`` fixture made."""

    id: str
    """The record's UUID."""
    pid: str
    """Its PID value: the ``<pid_value>`` of the REST API."""
    bucket_id: str
    """Its files-rest bucket."""


@pytest.fixture()
def record(db, location) -> CreatedRecord:
    """A record with files enabled, its bucket in the default (S3) location; created and committed, never indexed.

    ``RdmRecord.create`` runs the system fields: the PID field registers a
    recid (pidstore), the files field creates the bucket. ``commit()`` writes
    ``{"files": {"enabled": true}}`` into the record's JSON.
    """
    rec = RdmRecord.create({})
    rec.commit()
    db.session.commit()
    return CreatedRecord(id=str(rec.id), pid=rec.pid.pid_value, bucket_id=str(rec.bucket_id))


@dataclass
class RdmClient:
    """The FileResource on the live server, through ``requests``."""

    base_url: str
    http: requests.Session

    def files_url(self, pid: str) -> str:
        return f"{self.base_url}/rdm/records/{pid}/files"

    def file_url(self, pid: str, key: str) -> str:
        return f"{self.files_url(pid)}/{key}"

    def init(self, pid: str, entries: list[dict]) -> requests.Response:
        """POST the init body (a list of ``{"key", "size", "transfer": {...}}``)."""
        return self.http.post(self.files_url(pid), json=entries, timeout=60)

    def init_multipart(self, pid: str, key: str, size: int, part_size: int) -> requests.Response:
        """Init one multipart ("M") upload of ``size`` bytes in parts of ``part_size`` (the last one shorter)."""
        parts = -(-size // part_size)
        transfer = {"type": "M", "parts": parts, "part_size": part_size}
        return self.init(pid, [{"key": key, "size": size, "transfer": transfer}])

    def list(self, pid: str) -> requests.Response:
        return self.http.get(self.files_url(pid), timeout=60)

    def read(self, pid: str, key: str) -> requests.Response:
        return self.http.get(self.file_url(pid, key), timeout=60)

    def commit(self, pid: str, key: str) -> requests.Response:
        return self.http.post(f"{self.file_url(pid, key)}/commit", timeout=120)

    def delete(self, pid: str, key: str) -> requests.Response:
        return self.http.delete(self.file_url(pid, key), timeout=60)

    def content(self, pid: str, key: str, *, follow: bool = True) -> requests.Response:
        """GET the content; with ``follow`` the 302 is followed (to S3)."""
        return self.http.get(f"{self.file_url(pid, key)}/content", timeout=120, allow_redirects=follow)


@pytest.fixture()
def rdm(app, live_server) -> RdmClient:
    """A client for the FileResource on the live server; the links it answers point at that server."""
    app.config["SITE_API_URL"] = live_server.url
    app.config["SITE_UI_URL"] = live_server.url
    with requests.Session() as http:
        yield RdmClient(live_server.url, http)


def put_parts(file_item: dict, payload: bytes, part_size: int) -> list[requests.Response]:
    """PUT each part's bytes to its ``links.parts[*].url`` (straight to S3); assert each is accepted."""
    answers = []
    with requests.Session() as http:
        for part in file_item["links"]["parts"]:
            n = part["part"]
            response = http.put(part["url"], data=payload[(n - 1) * part_size : n * part_size], timeout=120)
            assert response.status_code == 200, (n, response.status_code, response.text)
            answers.append(response)
    return answers
