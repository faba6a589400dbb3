"""The cleanup task (called in-process here; the Celery-worker lane is issue 5's)."""

from __future__ import annotations

from datetime import timedelta

from invenio_db import db
from invenio_files_rest.models import ObjectVersion
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.models import MultipartUploadSession
from oarepo_s3.service import complete_upload
from oarepo_s3.tasks import cleanup_expired_multipart_uploads

from .helpers import put_parts, random_bytes


def start(record, key, size):
    mu = MultipartUpload(key=key, base_uri=None, expires=3600, size=size, part_size=None)
    record.files[key] = mu
    record.commit()
    db.session.commit()
    return mu


def backdate(session_id, hours=2):
    row = db.session.get(MultipartUploadSession, session_id)
    row.expires -= timedelta(hours=hours)
    db.session.commit()


def test_cleanup_expires_only_unfinished_uploads(location, s3_client, s3_bucket):
    record = Record.create({})
    db.session.commit()
    done_payload = random_bytes(1000, seed=21)
    done = start(record, "done.bin", len(done_payload))
    put_parts(done.session, done_payload)
    complete_upload(done.session["id"], None)
    stale = start(record, "stale.bin", 2000)
    put_parts(stale.session, random_bytes(2000, seed=22))
    fresh = start(record, "fresh.bin", 3000)
    for mu in (done, stale):
        backdate(mu.session["id"])

    assert cleanup_expired_multipart_uploads() == 1

    rows = {r.key: r for r in db.session.query(MultipartUploadSession)}
    assert rows["stale.bin"].status is MultipartUploadStatus.EXPIRED
    assert rows["done.bin"].status is MultipartUploadStatus.COMPLETE
    assert rows["fresh.bin"].status is MultipartUploadStatus.IN_PROGRESS
    uploads = {u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])}
    assert uploads == {fresh.session["upload_id"]}
    assert ObjectVersion.get(record.bucket, "stale.bin") is None
    with ObjectVersion.get(record.bucket, "done.bin").file.storage().open() as fp:
        assert fp.read() == done_payload
    assert record.bucket.size == len(done_payload) + 3000

    assert cleanup_expired_multipart_uploads() == 0  # nothing left to do


def test_cleanup_respects_the_limit(location):
    record = Record.create({})
    db.session.commit()
    ids = [start(record, f"f{i}.bin", 10).session["id"] for i in range(3)]
    for session_id in ids:
        backdate(session_id)
    assert cleanup_expired_multipart_uploads(limit=2) == 2
    assert cleanup_expired_multipart_uploads(limit=2) == 1
