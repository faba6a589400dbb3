"""Starting uploads and writing empty files: the one path every door takes.

Two kinds of caller reach the same functions:

- doors that leave the transaction to the service (the REST and Uppy
  views, the seed's views): the service creates the file version, commits,
  and aborts the S3 upload if the commit fails;
- doors inside the caller's transaction, handing over the FileInstance
  that files-rest (``record.files[key] = mu``) or InvenioRDM's transfer has
  just created (``into=``): the same locks, checks, S3 call and session
  row, but the version and the commit are the caller's; the S3 upload is
  aborted if that transaction rolls back (:mod:`.transaction`).

Either way the bucket is locked first and read afresh (:mod:`.locks`), so
two starts of one key give one file, and quota checks see every upload
that committed before.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager, nullcontext

import sqlalchemy as sa
from flask import current_app
from invenio_db import db
from invenio_files_rest.helpers import make_path
from invenio_files_rest.models import Bucket, FileInstance, ObjectVersion

from ..api import EMPTY_FILE_CHECKSUM, EmptyFile, MultipartUpload, MultipartUploadStatus
from ..errors import FileKeyExists, InvalidUploadRequest, RecordStateConflict, UploadNotFound
from ..models import MultipartUploadSession, utcnow
from ..proxies import current_oarepo_s3
from ..results import FileEntry
from ..s3 import split_s3_url
from .files import entry_of
from .locks import lock_bucket
from .signing import describe
from .transaction import atomic, on_rollback


def start_upload(bucket_id: uuid.UUID, upload: MultipartUpload, *, into: FileInstance | None = None,
                 fileurl: str | None = None, transfer: str | None = None) -> FileEntry:
    """Start a direct multipart upload of ``upload.key`` into the bucket.

    :param into: a FileInstance files-rest or records-resources created for
        this upload, in the caller's transaction (see the module's text);
        None: the service creates the version and commits.
    :param fileurl: with ``into``, the ``s3://`` URL its storage chose.
    :param transfer: with ``into``, the door that owns the file version (``records-resources``):
        its declared size is reserved in the bucket here (files-rest adds it for the seed door),
        and abort and expiry leave the version to that door (see :mod:`.terminate`).
    :returns: the pending file; its ``session.parts_url`` is signed when read.
    :raises FileKeyExists: the key is taken (own transaction only; the seed door makes a new version).
    :raises RecordStateConflict: the bucket is locked (its record is published).
    :raises InvalidUploadRequest: over the bucket's quota or file size limit, or not its location.
    :raises S3Error: S3 refused; nothing is recorded.
    """
    with _transaction(own=into is None):
        bucket = _open_bucket(bucket_id, own_transaction=into is None)
        _check_size_limit(bucket, upload.size)
        fileinstance, fileurl = _file_of(bucket, upload.key, into, fileurl)
        if upload.base_uri and not fileurl.startswith(upload.base_uri.rstrip("/") + "/"):
            raise InvalidUploadRequest("base_uri", f"must be the bucket's location; the file goes to {fileurl}")
        s3 = current_oarepo_s3.s3
        s3_bucket, s3_key = split_s3_url(fileurl)
        upload_id = s3.create_multipart_upload(s3_bucket, s3_key, upload.content_type)
        on_rollback(lambda: s3.abort_multipart_upload(s3_bucket, s3_key, upload_id),
                    f"abort the S3 upload {upload_id} of s3://{s3_bucket}/{s3_key}")
        if into is None:
            fileinstance.set_uri(fileurl, upload.size, None, readable=False, writable=False)
            obj = _new_head_version(bucket, upload.key, upload.content_type, fileinstance)
            bucket.size += upload.size  # the quota is reserved (what files-rest's set_file adds)
        else:
            obj = _adopted_version(bucket, fileinstance)
            obj.mimetype = upload.content_type
            if transfer is not None:
                fileinstance.set_uri(fileurl, upload.size, None, readable=False, writable=False)
                bucket.size += upload.size  # the quota reservation: records-resources never makes it
        row = MultipartUploadSession(
            id=uuid.uuid4(),
            bucket_id=bucket.id,
            version_id=obj.version_id,
            file_id=fileinstance.id,
            key=upload.key,
            s3_bucket=s3_bucket,
            s3_key=s3_key,
            upload_id=upload_id,
            content_type=upload.content_type,
            size=upload.size,
            part_size=upload.part_size,
            num_parts=upload.num_parts,
            owner_id=upload.owner_id,
            expires=utcnow() + upload.expires,
            status=MultipartUploadStatus.IN_PROGRESS,
            complete_url=upload.complete_url,
            abort_url=upload.abort_url,
            transfer=transfer,
        )
        db.session.add(row)
        db.session.flush()
        entry = FileEntry(key=upload.key, size=upload.size, mimetype=upload.content_type, checksum=None,
                          created=obj.created, updated=obj.updated, session=describe(row))
    return entry


def create_empty_file(bucket_id: uuid.UUID, empty: EmptyFile, *, into: FileInstance | None = None,
                      fileurl: str | None = None) -> FileEntry:
    """Write an empty file: a 0-byte S3 object and a complete file at once (S3 has no upload of zero parts).

    :param into: / :param fileurl: as for :func:`start_upload`.
    :raises FileKeyExists: the key is taken (own transaction only).
    :raises RecordStateConflict: the bucket is locked.
    :raises S3Error: S3 refused the object; nothing is recorded.
    """
    with _transaction(own=into is None):
        bucket = _open_bucket(bucket_id, own_transaction=into is None)
        fileinstance, fileurl = _file_of(bucket, empty.key, into, fileurl)
        s3 = current_oarepo_s3.s3
        s3_bucket, s3_key = split_s3_url(fileurl)
        s3.put_empty_object(s3_bucket, s3_key, empty.content_type)
        on_rollback(lambda: s3.delete_object(s3_bucket, s3_key), f"delete the empty object s3://{s3_bucket}/{s3_key}")
        fileinstance.set_uri(fileurl, 0, EMPTY_FILE_CHECKSUM, readable=True, writable=False)
        if into is None:
            obj = ObjectVersion.create(bucket, empty.key, mimetype=empty.content_type)
            obj.set_file(fileinstance)
        else:
            obj = _adopted_version(bucket, fileinstance)
            obj.mimetype = empty.content_type
        db.session.flush()
        entry = entry_of(obj)
    return entry


def _transaction(*, own: bool) -> AbstractContextManager[None]:
    """The service's own transaction, or (a door handed over its FileInstance) the caller's, left open."""
    return atomic() if own else nullcontext()


def _open_bucket(bucket_id: uuid.UUID, *, own_transaction: bool) -> Bucket:
    """Lock the bucket (exclusive) and refuse a locked one."""
    bucket = lock_bucket(bucket_id, may_restart=own_transaction, with_location=True)
    if bucket is None:
        raise UploadNotFound("The bucket does not exist.")
    if bucket.locked or bucket.deleted:
        raise RecordStateConflict("The record is published (its bucket is locked); its files can no longer change.")
    if not bucket.location.uri.startswith("s3://"):
        raise InvalidUploadRequest("base_uri", f"the bucket's location {bucket.location.uri} is not an s3:// location")
    return bucket


def _check_size_limit(bucket: Bucket, size: int) -> None:
    """Quota and maximum file size, from the bucket as it is under the lock."""
    limit = bucket.size_limit
    if limit is not None and size > limit:
        raise InvalidUploadRequest("size", f"exceeds the bucket's limit: {getattr(limit, 'reason', limit)}")


def _file_of(bucket: Bucket, key: str, into: FileInstance | None, fileurl: str | None) -> tuple[FileInstance, str]:
    """The FileInstance the file will be and its ``s3://`` URL: the door's, or a new one (then the key must be free)."""
    if into is not None:
        if fileurl is None:
            raise TypeError("a FileInstance handed to the service (into=...) needs its storage's fileurl")
        return into, fileurl
    if ObjectVersion.get(bucket, key) is not None:
        raise FileKeyExists(key)
    fileinstance = FileInstance.create()
    return fileinstance, _file_url(bucket, fileinstance)


def _new_head_version(bucket: Bucket, key: str, mimetype: str | None, fileinstance: FileInstance) -> ObjectVersion:
    """The head version of a free key (:func:`_file_of` checked it under the bucket lock), with its file.

    What ``ObjectVersion.create`` + ``set_file`` do, in fewer statements: no
    savepoint, and the key's previous head (a delete marker that files-rest's
    own delete left: "free" means no head *with a file*) demoted by one UPDATE
    instead of a query and an ORM flush, so the key keeps exactly one head. The
    caller adds the file's size to the bucket.
    """
    db.session.execute(
        sa.update(ObjectVersion)
        .where(ObjectVersion.bucket_id == bucket.id, ObjectVersion.key == key, ObjectVersion.is_head.is_(True))
        .values(is_head=False)
    )
    # By its id, not the relationship: appending to ``fileinstance.objects`` would cost an UPDATE of the
    # file row's timestamp right after its INSERT.
    obj = ObjectVersion(bucket_id=bucket.id, key=key, version_id=uuid.uuid4(), is_head=True, mimetype=mimetype,
                        file_id=fileinstance.id)
    db.session.add(obj)
    return obj


def _file_url(bucket: Bucket, fileinstance: FileInstance) -> str:
    """Where files-rest's storage factory puts a new file: ``<location>/ab/cd/<rest-of-uuid>/data``."""
    config = current_app.config
    url: str = make_path(
        bucket.location.uri,
        str(fileinstance.id),
        "data",
        config["FILES_REST_STORAGE_PATH_DIMENSIONS"],
        config["FILES_REST_STORAGE_PATH_SPLIT_LENGTH"],
    )
    return url


def _adopted_version(bucket: Bucket, fileinstance: FileInstance) -> ObjectVersion:
    """The version the caller is creating for ``fileinstance``, the only head of its key.

    files-rest demotes the previous head before we hold the bucket lock; a
    start that raced ours may have made itself head meanwhile, so any other
    head of the key is demoted here, under the lock.
    """
    obj = next(iter(fileinstance.objects), None)
    if obj is None:
        raise TypeError("the FileInstance handed to the service belongs to no object version")
    db.session.flush()
    db.session.execute(
        sa.update(ObjectVersion)
        .where(ObjectVersion.bucket_id == bucket.id, ObjectVersion.key == obj.key,
               ObjectVersion.is_head.is_(True), ObjectVersion.version_id != obj.version_id)
        .values(is_head=False)
        .execution_options(synchronize_session=False)
    )
    return obj
