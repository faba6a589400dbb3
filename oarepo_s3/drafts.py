"""Draft records with directly uploaded files: the record-level operations.

A draft is an invenio-records-files record (PID type ``recid``) whose JSON
holds ``owners`` (user ids) and ``status`` (``draft`` or ``published``).
Its bucket is the source of truth for the file list; the upload sessions
(:mod:`oarepo_s3.models`) for each file's state. ``record["_files"]`` is
rebuilt from the bucket when the record is published.

The REST views call these functions and nothing below them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from invenio_db import db
from invenio_files_rest.models import Bucket, ObjectVersion
from invenio_pidstore.errors import PIDDoesNotExistError, PIDUnregistered
from invenio_pidstore.minters import recid_minter_v2
from invenio_pidstore.resolver import Resolver
from invenio_records_files.api import Record
from sqlalchemy.orm import contains_eager

from . import service
from .api import EmptyFile, MultipartUpload, MultipartUploadStatus
from .errors import FileKeyExists, FileNotFound, RecordNotFound, RecordStateConflict
from .models import MultipartUploadSession
from .proxies import current_oarepo_s3

log = logging.getLogger(__name__)

DRAFT = "draft"
PUBLISHED = "published"


class DraftRecord(Record):
    """A record whose files are uploaded straight to S3."""

    @property
    def owners(self) -> list[int]:
        """Ids of the users who own the record."""
        return list(self.get("owners", []))

    @property
    def status(self) -> str:
        """``draft`` or ``published``."""
        return self.get("status", DRAFT)

    @property
    def pid_value(self) -> str:
        """The record's public identifier (a random ``recid``, e.g. ``a1b2c-3d4e5``)."""
        return self[current_app.config["PIDSTORE_RECID_FIELD"]]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file of a record: its head object version and, if uploaded directly, its session."""

    obj: ObjectVersion
    session: MultipartUploadSession | None

    @property
    def pending(self) -> bool:
        """True while the multipart upload is not complete."""
        return self.session is not None and self.session.status is not MultipartUploadStatus.COMPLETE


def create_draft(owner_id: int, metadata: dict) -> DraftRecord:
    """Create a draft owned by ``owner_id``, with a fresh bucket and a ``recid`` PID; commit."""
    record = DraftRecord.create({"metadata": metadata, "owners": [owner_id], "status": DRAFT})
    recid_minter_v2(record.id, record)
    record.commit()
    db.session.commit()
    return record


def resolve(pid_value: str, *, status: str | None = None) -> DraftRecord:
    """Load a record by PID value (``status`` filters drafts from published ones).

    :raises RecordNotFound: unknown PID, or not in the asked status.
    """
    try:
        _, record = Resolver(pid_type="recid", object_type="rec", getter=DraftRecord.get_record).resolve(
            str(pid_value)
        )
    except (PIDDoesNotExistError, PIDUnregistered):
        raise RecordNotFound() from None
    if status is not None and record.status != status:
        raise RecordNotFound(f"No {status} record {pid_value!r}.")
    return record


def list_files(record: DraftRecord) -> list[FileEntry]:
    """The record's current files, with their sessions, in one query."""
    rows = (
        db.session.query(ObjectVersion, MultipartUploadSession)
        .join(ObjectVersion.file)
        .outerjoin(MultipartUploadSession, MultipartUploadSession.version_id == ObjectVersion.version_id)
        .options(contains_eager(ObjectVersion.file))
        .filter(ObjectVersion.bucket_id == record.bucket_id, ObjectVersion.is_head.is_(True))
        .order_by(ObjectVersion.key)
        .all()
    )
    return [FileEntry(obj, session) for obj, session in rows]


def get_file(record: DraftRecord, key: str) -> FileEntry:
    """One file of the record. :raises FileNotFound: no such key."""
    obj = ObjectVersion.get(record.bucket_id, key)
    if obj is None or obj.file_id is None:
        raise FileNotFound(f"No file {key!r} in this record.")
    return FileEntry(obj, obj.multipart_upload)


def pending_session(record: DraftRecord, key: str) -> MultipartUploadSession:
    """The in-progress upload of ``key``.

    :raises FileNotFound: no such file, or its upload is finished.
    """
    entry = get_file(record, key)
    if entry.session is None or entry.session.status is not MultipartUploadStatus.IN_PROGRESS:
        raise FileNotFound(f"No multipart upload in progress for {key!r}.")
    return entry.session


def _ensure_draft(record: DraftRecord) -> None:
    if record.status != DRAFT:
        raise RecordStateConflict("The record is published; its files can no longer change.")


def start_file_upload(
    record: DraftRecord,
    key: str,
    size: int,
    *,
    owner_id: int | None,
    content_type: str | None = None,
    part_size: int | None = None,
    expires: int | timedelta | None = None,
    complete_url: str | None = None,
    abort_url: str | None = None,
) -> tuple[MultipartUploadSession, dict]:
    """Start a direct multipart upload of ``key`` into the draft; commit.

    The file goes straight into the draft's bucket (``record["_files"]`` is
    rebuilt from the bucket on publish, so the record JSON is not rewritten
    for every upload).

    :returns: the session row and its description with signed part URLs.
    :raises FileKeyExists: the draft already has a file with that key.
    :raises InvalidUploadRequest: a field breaks a rule (nothing is created).
    """
    _ensure_draft(record)
    mu = MultipartUpload(
        key=key,
        base_uri=None,
        expires=expires,
        size=size,
        part_size=part_size,
        complete_url=complete_url,
        abort_url=abort_url,
        content_type=content_type,
        owner_id=owner_id,
    )
    # One start per draft at a time (PostgreSQL: the bucket's row lock; SQLite: its write
    # lock): two requests for the same key would both find it free and both create it,
    # and files-rest's bucket size (the quota reservation) would lose one of the updates.
    service.sqlite_write_lock()
    db.session.query(Bucket).filter_by(id=record.bucket_id).with_for_update().one()
    if ObjectVersion.get(record.bucket_id, key) is not None:
        raise FileKeyExists(key)
    with db.session.begin_nested():
        ObjectVersion.create(record.bucket, key, stream=mu)
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        current_oarepo_s3.s3.abort_multipart_upload(mu.session["bucket"], mu.session["key"], mu.session["upload_id"])
        raise
    return service.get_session(mu.session["id"]), mu.session


def create_empty_file(record: DraftRecord, key: str, *, content_type: str | None = None) -> FileEntry:
    """Add an empty file to the draft: written to S3 at once (no upload, no payload); commit.

    :raises FileKeyExists: the draft already has a file with that key.
    :raises InvalidUploadRequest: a field breaks a rule (nothing is created).
    :raises S3Error: S3 refused the empty object (nothing is recorded).
    """
    _ensure_draft(record)
    stream = EmptyFile(key, content_type)
    if ObjectVersion.get(record.bucket_id, stream.key) is not None:
        raise FileKeyExists(stream.key)
    try:
        with db.session.begin_nested():
            ObjectVersion.create(record.bucket, stream.key, stream=stream, mimetype=stream.content_type)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return get_file(record, stream.key)


def complete_file_upload(record: DraftRecord, key: str, parts) -> FileEntry:
    """Complete the upload of ``key`` (idempotent: a completed file is returned as is)."""
    entry = get_file(record, key)
    if entry.session is None:
        raise FileNotFound(f"{key!r} was not uploaded with a multipart upload.")
    service.complete_upload(entry.session, parts)
    return get_file(record, key)


def abort_file_upload(record: DraftRecord, key: str) -> None:
    """Abort the in-progress upload of ``key`` and forget the file; commit."""
    _ensure_draft(record)
    entry = get_file(record, key)
    if entry.session is None or entry.session.status is MultipartUploadStatus.COMPLETE:
        raise FileNotFound(f"No multipart upload in progress for {key!r}.")
    service.abort_upload(entry.session)


def delete_file(record: DraftRecord, key: str) -> None:
    """Delete a file from the draft (aborting its upload if pending); commit.

    The database is committed before the S3 object is deleted: a failure in
    between leaves an unreferenced object (harmless, logged), never a row
    pointing at missing data.
    """
    _ensure_draft(record)
    entry = get_file(record, key)
    if entry.pending:
        service.abort_upload(entry.session)
        return
    obj, fileinstance = entry.obj, entry.obj.file
    if entry.session is not None:
        entry.session.version_id = None
        entry.session.file_id = None
    obj.remove()
    still_used = db.session.query(ObjectVersion).filter(ObjectVersion.file_id == fileinstance.id).count()
    storage = fileinstance.storage() if not still_used else None
    if not still_used:
        db.session.delete(fileinstance)
    db.session.commit()
    if storage is not None:
        try:
            storage.delete()
        except Exception:
            log.exception("deleted %r from the database, but not its S3 object %s", key, fileinstance.uri)


def publish(record: DraftRecord) -> DraftRecord:
    """Publish the draft: files become read-only; commit.

    :raises RecordStateConflict: uploads are still in progress (named), or already published.
    """
    _ensure_draft(record)
    pending = [e.obj.key for e in list_files(record) if e.pending]
    if pending:
        raise RecordStateConflict(
            f"{len(pending)} upload(s) still in progress: {', '.join(pending[:10])}; complete or abort them first."
        )
    record.files.flush()
    record["_files"] = record.files.dumps()
    record["status"] = PUBLISHED
    record.bucket.locked = True
    record.commit()
    db.session.commit()
    return record
