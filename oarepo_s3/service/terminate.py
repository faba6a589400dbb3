"""Ending uploads that will not complete: abort (the client gives up) and expiry (time ran out).

Lock the bucket, then the row -> must be in progress (never a completed
upload) -> S3 Abort (NoSuchUpload: already gone; an object that a failed
completion left behind is deleted too, so no object outlives its books) ->
remove the pending version and FileInstance (the bucket's size gives the
reservation back) -> terminal status -> commit. S3 first: if it fails, the
transaction rolls back and the upload stays in progress for a retry. In a
caller's transaction (records-resources' delete), S3 comes after its commit.
"""

from __future__ import annotations

import uuid

from invenio_db import db
from invenio_files_rest.models import ObjectVersion

from ..api import MultipartUploadStatus
from ..errors import UploadNotFound, UploadStateConflict
from ..models import MultipartUploadSession
from ..proxies import current_oarepo_s3
from ..results import UploadSession
from .locks import LockBusy, lock_upload
from .signing import SessionRef, describe, session_id
from .transaction import after_commit, atomic, in_callers_hands


def abort_upload(session: SessionRef) -> UploadSession:
    """Abort an upload in progress in S3 and remove its pending file; commit.

    :raises UploadStateConflict: the upload is complete (delete the file instead).
    :raises UploadNotFound: it was already aborted or expired.
    :raises S3Error: S3 failed; nothing changed.
    """
    with atomic():
        row = lock_upload(session_id(session))
        terminate(row, MultipartUploadStatus.ABORTED)
    return describe(row)


def expire_upload(session: SessionRef, *, wait_at_most: float | None = None) -> UploadSession | None:
    """Like :func:`abort_upload`, for an upload whose time ran out (status ``expired``).

    :param wait_at_most: seconds to wait for the bucket's lock, none for the row's; past that the
        upload is left as it is and None returned (the cleanup takes it up on its next run).
    :raises UploadStateConflict / UploadNotFound: not in progress any more.
    """
    try:
        with atomic():
            row = lock_upload(session_id(session), wait_at_most=wait_at_most)
            terminate(row, MultipartUploadStatus.EXPIRED)
    except LockBusy:
        return None
    return describe(row)


def terminate(row: MultipartUploadSession, status: MultipartUploadStatus) -> None:
    """Abort ``row``'s S3 upload and remove its pending file; the caller holds the locks and commits."""
    if row.status is MultipartUploadStatus.COMPLETE:
        raise UploadStateConflict("The upload is complete; delete the file instead of aborting it.")
    if row.status is not MultipartUploadStatus.IN_PROGRESS:
        raise UploadNotFound(f"The upload was already {row.status.value}.")
    bucket, key, upload_id = row.s3_bucket, row.s3_key, row.upload_id
    if in_callers_hands():
        # records-resources' delete: its transaction may still roll back after us (a concurrent
        # change of its record), and the file would then be pending with its S3 upload gone. S3
        # follows the books once they are committed; a crash in between leaves an upload of an
        # aborted session, which the orphan sweep aborts.
        after_commit(lambda: _abort_in_s3(bucket, key, upload_id), f"abort upload {upload_id} of {key}")
    else:
        _abort_in_s3(bucket, key, upload_id)
    if row.transfer is None:
        _remove_pending_file(row)
    else:
        _release_to_transfer(row)
    row.status = status


def _abort_in_s3(bucket: str, key: str, upload_id: str) -> None:
    s3 = current_oarepo_s3.s3
    if not s3.abort_multipart_upload(bucket, key, upload_id):
        # S3 no longer knows the upload: aborted before, or completed by an attempt whose
        # database commit failed. Such an object belongs to no file: delete it, or it is orphaned.
        s3.delete_object(bucket, key)


def _release_to_transfer(row: MultipartUploadSession) -> None:
    """Leave the pending file to the door that owns its version (records-resources' file record).

    Its file record holds the version (a foreign key): the version stays, the file can no longer
    be read (it never had content), and the size it reserves is given back when that door
    deletes it (``ObjectVersion.delete`` subtracts it), as it does for any of its files.
    """
    if row.file is not None:
        row.file.readable = False
    row.object_version = None
    row.file = None


def _remove_pending_file(row: MultipartUploadSession) -> None:
    """Drop the pending version and FileInstance; the previous version of the key becomes head again.

    Works in a locked bucket too: a pending file never was part of a
    published record's content (records published before publishing
    refused pending files may still hold one).
    """
    obj, fileinstance = row.object_version, row.file
    row.object_version = None
    row.file = None
    if obj is not None:
        bucket, key, was_head = obj.bucket, obj.key, obj.is_head
        bucket.size -= fileinstance.size if fileinstance is not None else 0
        db.session.delete(obj)
        db.session.flush()
        if was_head:
            _promote_previous(bucket.id, key)
    if fileinstance is not None:
        db.session.delete(fileinstance)
    db.session.flush()


def _promote_previous(bucket_id: uuid.UUID, key: str) -> None:
    previous = (
        ObjectVersion.query.filter_by(bucket_id=bucket_id, key=key).order_by(ObjectVersion.created.desc()).first()
    )
    if previous is not None:
        previous.is_head = True
