"""The smallest record-with-files that invenio-records-resources' FileService and FileResource accept.

Everything here is configuration of records-resources' own classes; none of
their behaviour is copied or changed:

- :class:`RdmRecordMetadata` / :class:`RdmFileMetadata`: the two tables a
  records-resources record with files needs (the record, and one row per
  file of it, pointing at a files-rest ObjectVersion).
- :class:`RdmRecord` / :class:`RdmFileRecord`: records-resources'
  ``Record`` and ``FileRecord`` APIs with a PID (the FileService resolves
  records by PID) and a :class:`FilesField` (``record.files``).
- :class:`AllowAll`: a permission policy that lets anyone do anything
  (permissions are not under test here).
- :class:`RdmFileServiceConfig` / :class:`RdmFileResourceConfig`: the
  FileService's links and the FileResource's URL prefix
  (``/rdm/records/<pid_value>/files...``).
- :data:`TRANSFERS`: the app's transfer types (``RECORDS_RESOURCES_TRANSFERS``):
  records-resources' own ``LocalTransfer`` ("L", what a committed file
  becomes) and ``MultipartTransfer`` ("M"). In 11.x the transfers are an
  app-wide registry, not a per-service setting.
"""

from __future__ import annotations

from invenio_db import db
from invenio_files_rest.models import Bucket
from invenio_pidstore.providers.recordid_v2 import RecordIdProviderV2
from invenio_records.models import RecordMetadataBase
from invenio_records.systemfields import ModelField
from invenio_records_permissions.generators import AnyUser, SystemProcess
from invenio_records_permissions.policies import BasePermissionPolicy
from invenio_records_resources.records.api import FileRecord, Record
from invenio_records_resources.records.models import FileRecordModelMixin
from invenio_records_resources.records.systemfields import FilesField, PIDField
from invenio_records_resources.resources import FileResourceConfig
from invenio_records_resources.services import (
    FileEndpointLink,
    FileServiceConfig,
    RecordEndpointLink,
)
from sqlalchemy import MetaData
from sqlalchemy_utils.types import UUIDType

BLUEPRINT = "oarepo_s3_rdm_files"
"""Name of the FileResource's blueprint (the links below are built from its endpoints)."""

URL_PREFIX = "/rdm/records/<pid_value>"
"""Where the FileResource is mounted: ``/rdm/records/<pid_value>/files``, ``.../files/<key>``..."""

TRANSFERS = [
    "invenio_records_resources.services.files.transfer.LocalTransfer",
    "invenio_records_resources.services.files.transfer.MultipartTransfer",
]
"""``RECORDS_RESOURCES_TRANSFERS`` of the test app: "L" and "M" only (no fetch, no remote)."""


# --- Tables --------------------------------------------------------------------

rdm_metadata = MetaData(naming_convention=db.metadata.naming_convention)
"""The two tables' own MetaData, not ``db.metadata``.

Why: pytest imports this module while collecting the whole suite, and any
table in ``db.metadata`` would then be created by every module's
``db.create_all()`` and, worse, reported by tests/test_alembic.py's
``alembic.compare_metadata()`` as a table no migration creates. Kept apart,
they are created and dropped only by tests/rdm/conftest.py's ``db`` fixture
(:func:`create_tables` / :func:`drop_tables`). Foreign keys to the
files-rest tables still work: they name the referenced columns directly.

The classes themselves stay in ``db.Model``'s registry (a class-level
``metadata`` only redirects the table, as Flask-SQLAlchemy's bind keys do):
a second registry would depend on ``db.Model``'s, and SQLAlchemy-Continuum
building its version classes there leaves the dependent registry flagged
as having new mappers, so every later app's ``configure_mappers()`` rebuilds those version
classes (an ``SAWarning``, an error in this suite).
"""


class RdmRecordMetadata(db.Model, RecordMetadataBase):
    """The record table (records-resources' usual columns, plus the files bucket)."""

    metadata = rdm_metadata
    __tablename__ = "oarepo_s3_rdm_test_record"

    bucket_id = db.Column(UUIDType, db.ForeignKey(Bucket.id))
    """The record's files-rest bucket (FilesField creates it with the record)."""

    bucket = db.relationship(Bucket)


class RdmFileMetadata(db.Model, RecordMetadataBase, FileRecordModelMixin):
    """One row per file of a record: key, transfer metadata (JSON), and the ObjectVersion it points at."""

    metadata = rdm_metadata
    __record_model_cls__ = RdmRecordMetadata
    __tablename__ = "oarepo_s3_rdm_test_file"


def create_tables() -> None:
    """Create the two tables (after ``db.create_all()``: they reference files-rest's tables)."""
    rdm_metadata.create_all(db.engine)


def drop_tables() -> None:
    """Drop the two tables (before ``db.drop_all()``: they reference files-rest's tables)."""
    rdm_metadata.drop_all(db.engine)


# --- Record APIs -----------------------------------------------------------------


class RdmFileRecord(FileRecord):
    """records-resources' file record API on :class:`RdmFileMetadata`."""

    model_cls = RdmFileMetadata
    record_cls = None  # RdmRecord, set below: FileSchema.dump_status resolves file_record.record


class RdmRecord(Record):
    """records-resources' record API with a PID and files.

    - ``pid``: the FileService resolves ``<pid_value>`` with
      ``record_cls.pid.resolve(id_, registered_only=False)``; a
      ``RecordIdProviderV2`` PID (pidstore table, no search) as in InvenioRDM.
    - ``files``: ``store=False`` keeps the entries in :class:`RdmFileMetadata`
      rows only (as InvenioRDM's drafts do); creating the record creates its
      bucket in the default location.
    - no ``index`` field: nothing here ever indexes.
    """

    model_cls = RdmRecordMetadata

    pid = PIDField("id", provider=RecordIdProviderV2)
    files = FilesField(store=False, file_cls=RdmFileRecord)
    bucket_id = ModelField()
    bucket = ModelField(dump=False)


RdmFileRecord.record_cls = RdmRecord


# --- Service and resource configuration ------------------------------------------------


class AllowAll(BasePermissionPolicy):
    """Any identity may do any action (anonymous users through ``any_user``, tasks through ``system_process``).

    The FileService asks for ``create_files``, ``read_files``, ``commit_files``,
    ``delete_files``, ``get_content_files``, ``set_content_files``,
    ``extract_file_metadata`` (the task run after a commit)...; every one is allowed.
    """

    @property
    def generators(self):
        return [AnyUser(), SystemProcess()]


class RdmFileServiceConfig(FileServiceConfig):
    """records-resources' FileServiceConfig with our record, the permissive policy and links.

    The links matter: a file's ``self`` link must exist for the transfer's
    own links (``links.parts`` of a multipart upload) to be added, and the
    test follows ``content`` and ``commit``. They are built by
    ``invenio_url_for`` from the FileResource's endpoints (the test app sets
    ``SITE_API_URL`` to the live server's URL).
    """

    service_id = "oarepo-s3-rdm-test-files"
    record_cls = RdmRecord
    permission_policy_cls = AllowAll

    file_links_list = {
        "self": RecordEndpointLink(f"{BLUEPRINT}.search", params=["pid_value"]),
    }
    file_links_item = {
        "self": FileEndpointLink(f"{BLUEPRINT}.read", params=["pid_value", "key"]),
        "content": FileEndpointLink(f"{BLUEPRINT}.read_content", params=["pid_value", "key"]),
        "commit": FileEndpointLink(f"{BLUEPRINT}.create_commit", params=["pid_value", "key"]),
    }


class RdmFileResourceConfig(FileResourceConfig):
    """records-resources' FileResourceConfig mounted at ``/rdm/records/<pid_value>`` (its routes unchanged)."""

    blueprint_name = BLUEPRINT
    url_prefix = URL_PREFIX
