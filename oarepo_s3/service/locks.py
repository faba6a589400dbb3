"""The one ordering rule that keeps a bucket's books exact under concurrency.

Every operation that changes a bucket's size or file set (start, empty
file, complete, abort, delete, expiry, publish) takes the **bucket's row
lock first, then the session's**, and reads the bucket afresh under the
lock, so ``bucket.size += ...`` never adds to a value another transaction
has already changed (a lost update).

On PostgreSQL the bucket lock has two modes:

- exclusive (``FOR NO KEY UPDATE``): start, empty file, abort, delete,
  expiry, publish. One at a time per bucket; the cleanup waits for it at
  most a few seconds (``OAREPO_S3_CLEANUP_LOCK_TIMEOUT``), then passes
  the session over until its next run. ``NO KEY`` because inserting
  an object version takes ``FOR KEY SHARE`` on its bucket (the foreign key
  check); a plain ``FOR UPDATE`` would conflict with that and let two
  starts deadlock.
- shared (``FOR SHARE``): complete. Completions of different files of one
  bucket run side by side (they change no size and no file set); a
  publish, delete or abort waits for them, and they wait for it.

SQLite has no row locks: :func:`sqlite_write_lock` takes its database
write lock instead, which serialises every writer.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from invenio_db import db
from invenio_files_rest.models import Bucket, ObjectVersion
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import joinedload

from ..errors import UploadNotFound
from ..models import MultipartUploadSession
from .transaction import owns_transaction


def is_sqlite() -> bool:
    """True when the app's database is SQLite (no row locks)."""
    return bool(db.session.get_bind().dialect.name == "sqlite")


def sqlite_write_lock(*, may_restart: bool = True) -> None:
    """On SQLite, take the database write lock now; elsewhere do nothing.

    SQLite ignores ``FOR UPDATE``. A write that changes nothing takes its
    write lock, so what the transaction reads next stays true until it
    commits. If this transaction's read snapshot is already older than
    another writer's commit, SQLite refuses the upgrade
    (``SQLITE_BUSY_SNAPSHOT``); with ``may_restart`` (nothing written yet)
    the transaction starts afresh, otherwise the error propagates.
    """
    if not is_sqlite():
        return
    m = MultipartUploadSession
    nothing = sa.update(m).where(sa.false()).values(status=m.status).execution_options(synchronize_session=False)
    try:
        db.session.execute(nothing)
    except OperationalError:
        if not may_restart:
            raise
        db.session.rollback()
        db.session.execute(nothing)


class LockBusy(Exception):
    """Another transaction held a lock longer than the caller was willing to wait."""


def lock_bucket(bucket_id: uuid.UUID, *, shared: bool = False, wait_at_most: float | None = None,
                may_restart: bool = True, with_location: bool = False) -> Bucket | None:
    """Lock the bucket's row and return it read afresh (None: no such bucket).

    :param shared: ``FOR SHARE`` (completions) instead of the exclusive ``FOR NO KEY UPDATE``.
    :param wait_at_most: seconds to wait for the lock on PostgreSQL (None: as long as it takes).
    :param may_restart: on SQLite, the transaction may start afresh to get the write lock.
    :param with_location: load ``bucket.location`` in the same query (its row is not locked).
    :raises LockBusy: waited ``wait_at_most`` seconds in vain; the transaction must be rolled back.
    """
    sqlite_write_lock(may_restart=may_restart)
    query = (
        sa.select(Bucket)
        .where(Bucket.id == bucket_id)
        .with_for_update(read=shared, key_share=not shared, of=Bucket)
        .execution_options(populate_existing=True)
    )
    if with_location:
        query = query.options(joinedload(Bucket.location))
    limited = wait_at_most is not None and not is_sqlite()
    if wait_at_most is not None and limited:
        db.session.execute(sa.text(f"SET LOCAL lock_timeout = {max(1, int(wait_at_most * 1000))}"))
    try:
        bucket: Bucket | None = db.session.execute(query).scalars().first()
    except OperationalError as e:
        if getattr(e.orig, "pgcode", None) == "55P03":  # lock_not_available
            raise LockBusy(f"bucket {bucket_id} stayed locked for {wait_at_most} s") from e
        raise
    if limited:
        db.session.execute(sa.text("SET LOCAL lock_timeout = DEFAULT"))
    return bucket


def lock_session(session_id: uuid.UUID, *, skip_locked: bool = False) -> MultipartUploadSession | None:
    """Lock the session's row (after its bucket's) and return it read afresh; None when skipped."""
    query = (
        sa.select(MultipartUploadSession)
        .where(MultipartUploadSession.id == session_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    row: MultipartUploadSession | None = db.session.execute(query).scalars().first()
    return row


def lock_session_of_version(version_id: uuid.UUID) -> MultipartUploadSession | None:
    """Lock the session of a file version (after its bucket's) and return it read afresh; None: it has none."""
    query = (
        sa.select(MultipartUploadSession)
        .where(MultipartUploadSession.version_id == version_id)
        .with_for_update(of=MultipartUploadSession)
        .execution_options(populate_existing=True)
    )
    row: MultipartUploadSession | None = db.session.execute(query).scalars().first()
    return row


def lock_head_session(bucket_id: uuid.UUID, key: str) -> tuple[ObjectVersion, MultipartUploadSession] | None:
    """The key's head version and its session, locked (after the bucket's) and read afresh, with its file: one query.

    What :func:`~.files.head_version` then :func:`lock_session_of_version`
    (with the file loaded) give, in one statement. None: no head with a file,
    or its file has no session; the caller tells which apart (a rare path).
    """
    query = (
        sa.select(ObjectVersion, MultipartUploadSession)
        .join(MultipartUploadSession, MultipartUploadSession.version_id == ObjectVersion.version_id)
        .where(ObjectVersion.bucket_id == bucket_id, ObjectVersion.key == key, ObjectVersion.is_head.is_(True),
               ObjectVersion.file_id.is_not(None))
        .options(joinedload(MultipartUploadSession.file))
        .with_for_update(of=MultipartUploadSession)
        .execution_options(populate_existing=True)
    )
    found = db.session.execute(query).first()
    return None if found is None else (found[0], found[1])


def bucket_of(session_id: uuid.UUID) -> uuid.UUID | None:
    """The bucket a session belongs to (read without a lock: it never changes but to NULL).

    :raises UploadNotFound: no such session.
    """
    found = db.session.execute(
        sa.select(MultipartUploadSession.bucket_id).where(MultipartUploadSession.id == session_id)
    ).first()
    if found is None:
        raise UploadNotFound()
    bucket_id: uuid.UUID | None = found[0]
    return bucket_id


def lock_upload(session_id: uuid.UUID, *, shared_bucket: bool = False,
                wait_at_most: float | None = None) -> MultipartUploadSession:
    """Lock a session's bucket, then the session (the ordering rule); return the row read afresh.

    :param shared_bucket: the bucket in shared mode (completions).
    :param wait_at_most: wait that long for the bucket, and not at all for the session (the cleanup).
    :raises UploadNotFound: no such session.
    :raises LockBusy: a lock was held longer than ``wait_at_most``.
    """
    bucket_id = bucket_of(session_id)
    may_restart = owns_transaction()
    if bucket_id is not None:
        lock_bucket(bucket_id, shared=shared_bucket, wait_at_most=wait_at_most, may_restart=may_restart)
    else:
        sqlite_write_lock(may_restart=may_restart)
    row = lock_session(session_id, skip_locked=wait_at_most is not None)
    if row is None:  # rows are never deleted: skipped, because a request holds it
        raise LockBusy(f"session {session_id} is locked")
    return row
