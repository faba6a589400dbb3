"""The database failing in the middle of a completion, after S3 has completed the upload.

The commit that would mark the upload complete fails once (an SQLAlchemy
``before_commit`` hook raises, as a dropped connection would). S3 has the
object by then; the books must stay as they were (upload in progress, file
unreadable), and then either a retried completion finishes them from S3, or
an abort/expiry removes the upload *and* the object S3 completed, so nothing
is left without its database row.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from invenio_db import db
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from oarepo_s3.api import MultipartUploadStatus
from oarepo_s3.cleanup import expire_uploads
from oarepo_s3.models import MultipartUploadSession

from ..helpers import put_parts
from ..rest.conftest import start_upload
from .books import books_problems, s3_view


@contextmanager
def commit_of_completion_fails_once():
    """Make the next commit that marks an upload complete raise; yield a list of the failures."""
    failed = []

    def completing(session):
        return any(isinstance(o, MultipartUploadSession) and o.status is MultipartUploadStatus.COMPLETE
                   for o in session.dirty)

    def after_flush(session, context):
        # Still the pre-flush state here: the rows this flush wrote.
        if completing(session):
            session.info["completing"] = True

    def before_commit(session):
        # Flushed earlier (an autoflush), or flushed by this very commit (before_commit comes first).
        if (session.info.pop("completing", False) or completing(session)) and not failed:
            failed.append(True)
            raise OperationalError("COMMIT", {}, Exception("injected: server closed the connection unexpectedly"))

    event.listen(Session, "after_flush", after_flush)
    event.listen(Session, "before_commit", before_commit)
    try:
        yield failed
    finally:
        event.remove(Session, "before_commit", before_commit)
        event.remove(Session, "after_flush", after_flush)


@pytest.fixture()
def completed_in_s3_only(owner, draft, state, s3_client, s3_bucket):
    """An upload S3 completed but the database could not record: (upload, snapshot before)."""
    upload = start_upload(owner, draft, key="db.bin", size=10)
    put_parts(upload["multipart_upload"], b"0123456789")
    before = state()
    with commit_of_completion_fails_once() as failed:
        r = owner.api().post(upload["links"]["complete"], json={}, timeout=60)
    assert failed and r.status_code == 500
    after = state()
    assert {k: after[k] for k in ("sessions", "objects", "files", "records", "s3_uploads")} == {
        k: before[k] for k in ("sessions", "objects", "files", "records")
    } | {"s3_uploads": []}  # the books did not move; S3 finished the upload
    objects, _ = s3_view(s3_client, s3_bucket)
    assert upload["multipart_upload"]["key"] in objects
    return upload


def test_a_retried_completion_finishes_the_books(completed_in_s3_only, owner, s3_client, s3_bucket):
    upload = completed_in_s3_only
    r = owner.api().post(upload["links"]["complete"], json={}, timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert owner.api().get(upload["links"]["self"] + "/content", timeout=30).content == b"0123456789"
    assert books_problems() == []


def test_an_abort_removes_the_object_the_failed_completion_left(completed_in_s3_only, owner, s3_client, s3_bucket):
    upload = completed_in_s3_only
    assert owner.api().post(upload["links"]["abort"], timeout=60).status_code == 204
    assert books_problems() == []
    assert upload["multipart_upload"]["key"] not in s3_view(s3_client, s3_bucket)[0]


def test_expiry_removes_the_object_the_failed_completion_left(completed_in_s3_only, s3_client, s3_bucket):
    upload = completed_in_s3_only
    db.session.commit()
    row = db.session.get(MultipartUploadSession, upload["multipart_upload"]["id"])
    from datetime import timedelta

    expired = [i for i in expire_uploads(now=row.expires + timedelta(seconds=1)) if hasattr(i, "upload_id")]
    assert [i.key for i in expired] == ["db.bin"]
    assert books_problems() == []
