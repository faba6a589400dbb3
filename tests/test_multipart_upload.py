"""The seed's Python API end to end: record.files[key] = MultipartUpload, real bytes to S3."""

from __future__ import annotations

import hashlib

import pytest
import requests
from invenio_db import db
from invenio_files_rest.models import Bucket, ObjectVersion
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.errors import PartsMismatch, UploadExpired, UploadNotFound, UploadPending, UploadStateConflict
from oarepo_s3.models import MultipartUploadSession
from oarepo_s3.service import ReportedPart, abort_upload, complete_upload

from .helpers import put_parts, random_bytes

MiB = 1024 * 1024
SIZE = 3 * 5 * MiB + 1234  # three full 5 MiB parts and a short tail


def reported(parts):
    return [ReportedPart(p["PartNum"], p["ETag"]) for p in parts]


@pytest.fixture()
def record(location):
    record = Record.create({"title": "test"})
    db.session.commit()
    return record


def start(record, key="data.bin", size=SIZE, part_size=5 * MiB, **kwargs):
    files = record.files
    mu = MultipartUpload(
        key=key,
        base_uri=files.bucket.location.uri,
        expires=kwargs.pop("expires", 3600),
        size=size,
        part_size=part_size,
        complete_url=f"/records/1/files/{key}/complete-multipart",
        abort_url=f"/records/1/files/{key}/abort-multipart",
        **kwargs,
    )
    files[key] = mu
    record.commit()
    db.session.commit()
    return mu


def expected_s3_etag(payload: bytes, part_size: int) -> str:
    digests = [hashlib.md5(payload[i : i + part_size]).digest() for i in range(0, len(payload), part_size)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def test_upload_complete_and_read_back(app, record, s3_client, live_server):
    payload = random_bytes(SIZE)
    mu = start(record)

    session = mu.session
    assert session["num_chunks"] == 4 and session["chunk_size"] == 5 * MiB
    assert len(session["parts_url"]) == 4
    assert session["status"] == "in_progress"
    assert session["expires"].endswith("Z")
    assert session["complete_url"] == "/records/1/files/data.bin/complete-multipart"
    assert session["abort_url"] == "/records/1/files/data.bin/abort-multipart"
    # The S3 upload really exists.
    uploads = s3_client.list_multipart_uploads(Bucket=session["bucket"]).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(session["key"], session["upload_id"])]

    obj = ObjectVersion.get(record.bucket, "data.bin")
    assert obj.file.readable is False, "a pending upload must not be readable"
    with pytest.raises(UploadPending):
        obj.file.storage().open()

    parts = put_parts(session, payload)
    row = complete_upload(session["id"], reported(parts))

    assert row.status is MultipartUploadStatus.COMPLETE
    assert row.checksum == f"s3etag:{expected_s3_etag(payload, 5 * MiB)}"
    obj = ObjectVersion.get(record.bucket, "data.bin")
    assert obj.file.readable is True and obj.file.size == SIZE and obj.file.checksum == row.checksum
    assert Bucket.get(record.bucket.id).size == SIZE

    # Byte for byte through the storage ...
    with obj.file.storage().open() as fp:
        assert fp.read() == payload
    # ... and through files-rest's download, a 302 to a presigned GET.
    url = f"{live_server.url}/files/{record.bucket.id}/data.bin"
    response = requests.get(url, allow_redirects=False, timeout=30)
    assert response.status_code == 302
    assert response.headers["Location"].startswith(app.config["S3_ENDPOINT_URL"])
    downloaded = requests.get(url, timeout=60)
    assert downloaded.status_code == 200 and downloaded.content == payload
    head = s3_client.head_object(Bucket=session["bucket"], Key=session["key"])
    assert head["ContentLength"] == SIZE
    assert head["ContentType"] == "application/octet-stream"
    assert head["ETag"].strip('"') == row.checksum.split(":", 1)[1]
    assert live_server.received_bytes == 0


def test_record_files_exposes_the_session(record):
    mu = start(record, key="notes.txt", size=100, part_size=None)
    item = record.files["notes.txt"]["multipart_upload"]
    assert item["upload_id"] == mu.session["upload_id"]
    assert item["num_chunks"] == 1 and item["chunk_size"] == 100
    assert len(item["parts_url"]) == 1
    assert {"upload_id", "bucket", "key", "chunk_size", "num_chunks", "parts_url", "expires", "status",
            "complete_url", "abort_url"} <= set(item.keys())
    assert item["status"] == "in_progress"


def test_content_type_is_stored_on_the_object(record, s3_client):
    payload = b"hello, world\n"
    mu = start(record, key="readme.txt", size=len(payload), part_size=None)
    put_parts(mu.session, payload)
    complete_upload(mu.session["id"], None)
    head = s3_client.head_object(Bucket=mu.session["bucket"], Key=mu.session["key"])
    assert head["ContentType"] == "text/plain"


def test_missing_part_is_named_and_upload_stays_resumable(record):
    payload = random_bytes(SIZE, seed=2)
    mu = start(record)
    parts = put_parts(mu.session, payload, numbers={1, 2, 4})
    with pytest.raises(PartsMismatch) as e:
        complete_upload(mu.session["id"], None)
    assert "parts 3 are not in S3" in str(e.value)
    row = db.session.get(MultipartUploadSession, mu.session["id"])
    assert row.status is MultipartUploadStatus.IN_PROGRESS
    # Resume: send the missing part and complete.
    parts += put_parts(mu.session, payload, numbers={3})
    assert complete_upload(row.id, reported(parts)).status is MultipartUploadStatus.COMPLETE


def test_wrong_etag_is_named(record):
    payload = random_bytes(SIZE, seed=3)
    mu = start(record)
    parts = put_parts(mu.session, payload)
    parts[1]["ETag"] = '"00000000000000000000000000000000"'
    with pytest.raises(PartsMismatch) as e:
        complete_upload(mu.session["id"], reported(parts))
    assert "part 2: ETag" in str(e.value)
    assert e.value.errors[0].res["field"] == "parts[1].ETag"


def test_wrong_part_size_is_named(record):
    payload = random_bytes(SIZE, seed=4)
    mu = start(record)
    put_parts(mu.session, payload[:-1])  # last part one byte short
    with pytest.raises(PartsMismatch) as e:
        complete_upload(mu.session["id"], None)
    assert "part 4 has 1233 bytes in S3, expected 1234" in str(e.value)


def test_reported_part_list_must_be_complete_and_unique(record):
    mu = start(record)
    from oarepo_s3.errors import InvalidUploadRequest

    with pytest.raises(InvalidUploadRequest, match="missing 3, 4"):
        complete_upload(mu.session["id"], [ReportedPart(1, "x"), ReportedPart(2, "y")])
    with pytest.raises(InvalidUploadRequest, match="listed twice"):
        complete_upload(mu.session["id"], [ReportedPart(1, "x"), ReportedPart(1, "y")])
    with pytest.raises(InvalidUploadRequest, match="integer from 1 to 4"):
        complete_upload(mu.session["id"], [ReportedPart(5, "x")])


def test_complete_is_idempotent(record):
    payload = random_bytes(SIZE, seed=5)
    mu = start(record)
    parts = put_parts(mu.session, payload)
    first = complete_upload(mu.session["id"], reported(parts))
    checksum = first.checksum
    again = complete_upload(mu.session["id"], reported(parts))
    assert again.status is MultipartUploadStatus.COMPLETE and again.checksum == checksum


def test_abort_removes_pending_file_and_s3_upload(record, s3_client):
    mu = start(record)
    put_parts(mu.session, random_bytes(SIZE), numbers={1})
    assert Bucket.get(record.bucket.id).size == SIZE  # declared size is reserved in the quota

    row = abort_upload(mu.session["id"])
    assert row.status is MultipartUploadStatus.ABORTED
    assert s3_client.list_multipart_uploads(Bucket=mu.session["bucket"]).get("Uploads", []) == []
    assert ObjectVersion.get(record.bucket, "data.bin") is None
    assert Bucket.get(record.bucket.id).size == 0
    assert row.version_id is None and row.file_id is None

    with pytest.raises(UploadNotFound):
        abort_upload(row.id)
    with pytest.raises(UploadStateConflict, match="aborted"):
        complete_upload(row.id, None)


def test_abort_after_complete_is_refused(record):
    payload = random_bytes(SIZE, seed=6)
    mu = start(record)
    complete_upload(mu.session["id"], reported(put_parts(mu.session, payload)))
    with pytest.raises(UploadStateConflict, match="complete"):
        abort_upload(mu.session["id"])
    with ObjectVersion.get(record.bucket, "data.bin").file.storage().open() as fp:
        assert fp.read() == payload


def test_aborting_a_new_version_restores_the_previous_head(record):
    payload = b"first version"
    first = start(record, key="doc.txt", size=len(payload), part_size=None)
    complete_upload(first.session["id"], reported(put_parts(first.session, payload)))
    second = start(record, key="doc.txt", size=50, part_size=None)
    assert ObjectVersion.get(record.bucket, "doc.txt").file.readable is False
    abort_upload(second.session["id"])
    head = ObjectVersion.get(record.bucket, "doc.txt")
    assert head is not None and head.file.readable
    with head.file.storage().open() as fp:
        assert fp.read() == payload


def test_expired_upload_cannot_be_completed(record):
    from datetime import timedelta

    mu = start(record)
    row = db.session.get(MultipartUploadSession, mu.session["id"])
    row.expires = row.expires - timedelta(hours=2)
    db.session.commit()
    with pytest.raises(UploadExpired):
        complete_upload(row.id, None)


def test_list_parts_follows_pages(app, record):
    """ListParts answers at most 1,000 parts a page; shrink the page to see paging work."""
    from oarepo_s3.proxies import current_oarepo_s3

    payload = random_bytes(SIZE, seed=7)
    mu = start(record)
    put_parts(mu.session, payload)
    s3 = current_oarepo_s3.s3
    s3.list_page_size = 1
    try:
        parts = s3.list_parts(mu.session["bucket"], mu.session["key"], mu.session["upload_id"])
        assert [p.number for p in parts] == [1, 2, 3, 4]
        assert complete_upload(mu.session["id"], None).status is MultipartUploadStatus.COMPLETE
    finally:
        s3.list_page_size = None
