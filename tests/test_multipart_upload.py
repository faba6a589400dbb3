"""The seed's Python API end to end: record.files[key] = MultipartUpload, real bytes to S3."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from io import BytesIO

import pytest
import requests
from invenio_db import db
from invenio_files_rest.models import Bucket, ObjectVersion
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.errors import PartsMismatch, UploadExpired, UploadNotFound, UploadPending, UploadStateConflict
from oarepo_s3.files import S3FileObject
from oarepo_s3.models import MultipartUploadSession
from oarepo_s3.results import SESSION_KEYS
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


class FilesWithSessions(Record):
    """A records-files record whose file dumps carry the upload session (what DraftRecord does)."""

    file_cls = S3FileObject


def test_the_session_is_a_read_only_mapping_wherever_it_is_read(location, s3_client):
    record = FilesWithSessions.create({"title": "mapping"})
    db.session.commit()
    payload = b"mapping, not a dict lookalike\n" * 4
    mu = start(record, key="notes.txt", size=len(payload), part_size=None)
    file = record.files["notes.txt"]
    views = {"mu.session": mu.session, "files[key][...]": file["multipart_upload"],
             "files[key].get(...)": file.get("multipart_upload")}
    for where, session in views.items():
        assert isinstance(session, Mapping), where
        assert "upload_id" in session and "uploadId" not in session, where
        assert session.get("upload_id") == mu.session["upload_id"] and session.get("nope", 7) == 7, where
        assert list(session) == list(session.keys()) == list(SESSION_KEYS), where
        assert len(session) == len(SESSION_KEYS), where
        as_dict = dict(session)
        assert as_dict == dict(session.items()), where
        assert as_dict["status"] == "in_progress" and as_dict["file_key"] == "notes.txt", where
        assert len(as_dict["parts_url"]) == 1, where
        with pytest.raises(TypeError):
            session["status"] = "complete"  # read-only
        with pytest.raises(KeyError):
            session["nope"]
    # The URL from dict(...) really uploads: real bytes, then completion.
    response = requests.put(dict(views["files[key][...]"])["parts_url"][0], data=payload, timeout=30)
    assert response.status_code == 200, response.text
    done = complete_upload(mu.session["id"], [ReportedPart(1, response.headers["ETag"])])
    assert record.files["notes.txt"]["multipart_upload"]["status"] == "complete"
    assert record.files["notes.txt"]["multipart_upload"]["parts_url"] == []  # nothing left to sign
    # The dump goes into the record's JSON: the session without its part URLs (bearer credentials).
    dumped = record.files["notes.txt"].dumps()
    assert dumped["multipart_upload"]["checksum"] == done.checksum
    assert "parts_url" not in dumped["multipart_upload"]
    assert json.loads(json.dumps(dumped))["multipart_upload"]["upload_id"] == mu.session["upload_id"]
    with FilesWithSessions.get_record(record.id).files["notes.txt"].obj.file.storage().open() as fp:
        assert fp.read() == payload


def test_a_file_stored_from_a_stream_has_no_session(location):
    record = Record.create({"title": "plain"})
    record.files["plain.txt"] = BytesIO(b"plain bytes")
    record.commit()
    db.session.commit()
    assert record.files["plain.txt"]["multipart_upload"] is None
    assert record.files["plain.txt"].get("multipart_upload") is None


def test_a_rolled_back_start_leaves_no_upload_in_s3(record, s3_client):
    """The seed door runs in the caller's transaction: if the caller rolls back, S3 forgets the upload too."""
    files = record.files
    mu = MultipartUpload(key="gone.bin", base_uri=files.bucket.location.uri, expires=3600, size=SIZE)
    files["gone.bin"] = mu
    assert _uploads(s3_client, mu.session["bucket"]) == [mu.session["upload_id"]]
    db.session.rollback()
    assert _uploads(s3_client, mu.session["bucket"]) == []
    assert db.session.query(MultipartUploadSession).count() == 0
    # ... and a savepoint that rolls back takes its upload with it, while the outer transaction commits.
    kept = MultipartUpload(key="kept.bin", base_uri=files.bucket.location.uri, expires=3600, size=SIZE)
    record.files["kept.bin"] = kept
    savepoint = db.session.begin_nested()
    dropped = MultipartUpload(key="dropped.bin", base_uri=files.bucket.location.uri, expires=3600, size=SIZE)
    record.files["dropped.bin"] = dropped
    savepoint.rollback()
    db.session.commit()
    assert _uploads(s3_client, kept.session["bucket"]) == [kept.session["upload_id"]]
    assert [r.key for r in db.session.query(MultipartUploadSession)] == ["kept.bin"]


def _uploads(s3_client, bucket: str) -> list[str]:
    return [u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


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


def test_a_part_of_the_wrong_size_is_refused_by_s3_or_named_at_completion(record, s3_backend):
    payload = random_bytes(SIZE, seed=4)
    mu = start(record)
    put_parts(mu.session, payload, numbers={1, 2, 3})
    short = requests.put(mu.session["parts_url"][3], data=payload[3 * 5 * MiB : -1], timeout=60)  # one byte short
    if s3_backend.name == "ceph":  # checks signatures, and each part URL signs its part's Content-Length
        assert short.status_code == 403 and "SignatureDoesNotMatch" in short.text, short.text
        expected = "parts 4 are not in S3"
    else:  # moto checks no signature: the size check before S3 Complete catches the part
        assert short.status_code == 200
        expected = "part 4 has 1233 bytes in S3, expected 1234"
    with pytest.raises(PartsMismatch) as e:
        complete_upload(mu.session["id"], None)
    assert expected in str(e.value)


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
    stored = db.session.get(MultipartUploadSession, row.id)
    assert stored.version_id is None and stored.file_id is None

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
