"""A bucket's files as the doors see them: list, read, delete, download, freeze.

Reads take no lock. Delete and freeze change the bucket's file set, so they
take the bucket's lock first (:mod:`.locks`).
"""

from __future__ import annotations

import logging
import uuid

import sqlalchemy as sa
from flask import Response
from invenio_db import db
from invenio_files_rest.models import FileInstance, ObjectVersion
from sqlalchemy.orm import contains_eager

from ..api import MultipartUploadStatus
from ..errors import FileNotFound, RecordStateConflict, UploadPending
from ..models import MultipartUploadSession
from ..proxies import current_oarepo_s3
from ..results import FileEntry, UploadSession
from ..s3 import split_s3_url
from .locks import lock_bucket, lock_session_of_version
from .signing import describe
from .terminate import terminate
from .transaction import after_commit, atomic

log = logging.getLogger(__name__)


def entry_of(obj: ObjectVersion) -> FileEntry:
    """The file of ``obj``, with its upload session if it has one."""
    return entry_with_session(obj, obj.upload_session)


def entry_with_session(obj: ObjectVersion, row: MultipartUploadSession | None) -> FileEntry:
    """The file of ``obj`` whose session row (or None) the caller has already read."""
    return FileEntry(
        key=obj.key,
        size=obj.file.size,
        mimetype=obj.mimetype,
        checksum=obj.file.checksum,
        created=obj.created,
        updated=obj.updated,
        session=None if row is None else describe(row),
    )


def list_files(bucket_id: uuid.UUID) -> list[FileEntry]:
    """The bucket's current files, with their sessions, in one query, by key."""
    rows = (
        db.session.query(ObjectVersion, MultipartUploadSession)
        .join(ObjectVersion.file)
        .outerjoin(MultipartUploadSession, MultipartUploadSession.version_id == ObjectVersion.version_id)
        .options(contains_eager(ObjectVersion.file))
        .filter(ObjectVersion.bucket_id == bucket_id, ObjectVersion.is_head.is_(True))
        .order_by(ObjectVersion.key)
        .all()
    )
    return [entry_with_session(obj, row) for obj, row in rows]


def head_version(bucket_id: uuid.UUID, key: str) -> ObjectVersion:
    """The key's current version. :raises FileNotFound: no such file."""
    obj = ObjectVersion.get(bucket_id, key)
    if obj is None or obj.file_id is None:
        raise FileNotFound(f"No file {key!r} in this record.")
    return obj


def get_file(bucket_id: uuid.UUID, key: str) -> FileEntry:
    """One file of the bucket. :raises FileNotFound: no such key."""
    return entry_of(head_version(bucket_id, key))


def _locked_session_of(obj: ObjectVersion) -> MultipartUploadSession | None:
    """The version's session row, locked after its bucket (the ordering rule) and read afresh."""
    return lock_session_of_version(obj.version_id)


def upload_of(bucket_id: uuid.UUID, key: str, *, in_progress: bool = True) -> UploadSession:
    """The multipart upload of ``key`` (by default: only one in progress).

    :raises FileNotFound: no such file, it was not uploaded directly, or its upload is finished.
    """
    found = db.session.execute(
        sa.select(ObjectVersion.version_id, MultipartUploadSession)
        .outerjoin(MultipartUploadSession, MultipartUploadSession.version_id == ObjectVersion.version_id)
        .where(ObjectVersion.bucket_id == bucket_id, ObjectVersion.key == key, ObjectVersion.is_head.is_(True),
               ObjectVersion.file_id.isnot(None))
    ).one_or_none()  # the head version and its session in one query (what ObjectVersion.get finds)
    if found is None:
        raise FileNotFound(f"No file {key!r} in this record.")
    row: MultipartUploadSession | None = found[1]
    if row is None:
        raise FileNotFound(f"{key!r} was not uploaded with a multipart upload.")
    if in_progress and row.status is not MultipartUploadStatus.IN_PROGRESS:
        raise FileNotFound(f"No multipart upload in progress for {key!r}.")
    return describe(row)


def abort_file_upload(bucket_id: uuid.UUID, key: str) -> UploadSession:
    """Abort the upload in progress of ``key`` (see :mod:`.terminate`); commit.

    :raises FileNotFound: no upload in progress for that key.
    """
    with atomic():
        lock_bucket(bucket_id)
        row = _locked_session_of(head_version(bucket_id, key))
        if row is None or row.status is MultipartUploadStatus.COMPLETE:
            raise FileNotFound(f"No multipart upload in progress for {key!r}.")
        terminate(row, MultipartUploadStatus.ABORTED)
    return describe(row)


def delete_file(bucket_id: uuid.UUID, key: str) -> None:
    """Delete a file (aborting its upload if pending); commit, then delete its S3 object.

    The database commits first: a failure after it leaves an unreferenced
    object (logged; the orphan check reports it), never a file whose data
    is gone.

    :raises FileNotFound: no such key.
    :raises RecordStateConflict: the bucket is locked (its record is published).
    """
    with atomic():
        bucket = lock_bucket(bucket_id)
        if bucket is None or bucket.locked:
            raise RecordStateConflict("The record is published; its files can no longer change.")
        obj = head_version(bucket_id, key)
        row = _locked_session_of(obj)
        if row is not None and row.status is not MultipartUploadStatus.COMPLETE:
            terminate(row, MultipartUploadStatus.ABORTED)
            return
        fileinstance: FileInstance = obj.file
        if row is not None:
            row.version_id = None
            row.file_id = None
        obj.remove()
        still_used = db.session.query(ObjectVersion).filter(ObjectVersion.file_id == fileinstance.id).count()
        if not still_used:
            db.session.delete(fileinstance)
            s3_bucket, s3_key = split_s3_url(fileinstance.uri)
            s3 = current_oarepo_s3.s3
            after_commit(lambda: s3.delete_object(s3_bucket, s3_key), f"delete s3://{s3_bucket}/{s3_key} of {key!r}")


def freeze_bucket(bucket_id: uuid.UUID) -> None:
    """Lock the bucket for good (publishing): no file may change after this; in the caller's transaction.

    :raises RecordStateConflict: uploads are still in progress (named), or it is locked already.
    """
    bucket = lock_bucket(bucket_id)
    if bucket is None or bucket.locked:
        raise RecordStateConflict("The record is published; its files can no longer change.")
    pending = [
        key
        for (key,) in db.session.query(MultipartUploadSession.key)
        .filter(MultipartUploadSession.bucket_id == bucket_id,
                MultipartUploadSession.status == MultipartUploadStatus.IN_PROGRESS)
        .order_by(MultipartUploadSession.key)
    ]
    if pending:
        raise RecordStateConflict(
            f"{len(pending)} upload(s) still in progress: {', '.join(pending[:10])}; complete or abort them first."
        )
    bucket.locked = True


def send_file(bucket_id: uuid.UUID, key: str) -> Response:
    """302 to a presigned S3 GET of the file, as an attachment named after the key.

    :raises FileNotFound: no such key. :raises UploadPending: still being uploaded.
    """
    obj = head_version(bucket_id, key)
    row = obj.upload_session
    if row is not None and row.status is not MultipartUploadStatus.COMPLETE:
        raise UploadPending()
    response: Response = obj.file.storage().send_file(
        obj.basename, mimetype=obj.mimetype, restricted=True, checksum=obj.file.checksum, as_attachment=True
    )
    return response

