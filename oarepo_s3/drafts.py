"""Draft records with directly uploaded files: the record-level operations.

A draft is an invenio-records-files record (PID type ``recid``) whose JSON
holds ``owners`` (user ids) and ``status`` (``draft`` or ``published``).
Its bucket is the source of truth for the file list, the upload sessions
for each file's state; ``record["_files"]`` is rebuilt from the bucket when
the record is published.

Record-level work lives here (create, resolve, publish); everything about
the files of a draft's bucket belongs to :mod:`oarepo_s3.service`, called
with ``record.bucket_id``. Transactions are the service's
(:func:`oarepo_s3.service.atomic`): this module never commits by itself.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app
from invenio_db import db
from invenio_pidstore.errors import PIDDoesNotExistError, PIDUnregistered
from invenio_pidstore.minters import recid_minter_v2
from invenio_pidstore.models import PersistentIdentifier, PIDStatus
from invenio_pidstore.resolver import Resolver
from invenio_records_files.api import Record

from . import service
from .errors import RecordNotFound
from .files import S3FileObject

DRAFT = "draft"
PUBLISHED = "published"


class DraftRecord(Record):  # type: ignore[misc]  # invenio-records-files is untyped
    """A record whose files are uploaded straight to S3."""

    file_cls = S3FileObject

    @property
    def owners(self) -> list[int]:
        """Ids of the users who own the record."""
        return list(self.get("owners", []))

    @property
    def status(self) -> str:
        """``draft`` or ``published``."""
        status: str = self.get("status", DRAFT)
        return status

    @property
    def pid_value(self) -> str:
        """The record's public identifier (a random ``recid``, e.g. ``a1b2c-3d4e5``)."""
        value: str = self[current_app.config["PIDSTORE_RECID_FIELD"]]
        return value


def create_draft(owner_id: int, metadata: dict[str, Any]) -> DraftRecord:
    """Create a draft owned by ``owner_id``, with a fresh bucket and a ``recid`` PID; commit."""
    with service.atomic():
        record = DraftRecord.create({"metadata": metadata, "owners": [owner_id], "status": DRAFT})
        recid_minter_v2(record.id, record)
        record.commit()
    assert isinstance(record, DraftRecord)
    return record


def resolve(pid_value: str, *, status: str | None = None) -> DraftRecord:
    """Load a record by PID value (``status`` filters drafts from published ones).

    :raises RecordNotFound: unknown PID, or not in the asked status.
    """
    record = _registered(str(pid_value))
    if record is None:  # unknown, unregistered, deleted, redirected...: pidstore's resolver says which
        record = _resolved(pid_value)
    if status is not None and record.status != status:
        raise RecordNotFound(f"No {status} record {pid_value!r}.")
    return record


def _registered(pid_value: str) -> DraftRecord | None:
    """The record of a registered ``recid``, in one query (what the resolver finds in two); else None."""
    model = DraftRecord.model_cls
    pid = PersistentIdentifier
    with db.session.no_autoflush:
        found = db.session.execute(
            sa.select(model)
            .join(pid, pid.object_uuid == model.id)
            .where(pid.pid_type == "recid", pid.pid_value == pid_value, pid.status == PIDStatus.REGISTERED,
                   pid.object_type == "rec", model.is_deleted != True)  # noqa: E712 (SQL, as records' get_record)
        ).scalars().one_or_none()
    return None if found is None else DraftRecord(found.data, model=found)


def _resolved(pid_value: str) -> DraftRecord:
    """pidstore's resolver, for everything but a registered ``recid`` (its errors, as they always were)."""
    try:
        _, record = Resolver(pid_type="recid", object_type="rec", getter=DraftRecord.get_record).resolve(
            str(pid_value)
        )
    except (PIDDoesNotExistError, PIDUnregistered):
        raise RecordNotFound() from None
    assert isinstance(record, DraftRecord)
    return record


def publish(record: DraftRecord) -> DraftRecord:
    """Publish the draft: its bucket is locked for good, its files listed in the record; commit.

    :raises RecordStateConflict: uploads are still in progress (named), or already published.
    """
    with service.atomic():
        service.freeze_bucket(record.bucket_id)
        record.files.flush()
        record["_files"] = record.files.dumps()
        record["status"] = PUBLISHED
        record.commit()
    return record
