"""S3 behaviour the suite relies on, and S3 failures mid-lifecycle."""

from __future__ import annotations

import pytest
import requests
from botocore.exceptions import ClientError
from invenio_db import db
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.errors import S3Error, S3Unavailable
from oarepo_s3.models import MultipartUploadSession
from oarepo_s3.proxies import current_oarepo_s3
from oarepo_s3.s3 import S3Client
from oarepo_s3.service import abort_upload, complete_upload

from .helpers import put_parts, random_bytes

MiB = 1024 * 1024


def test_embedded_s3_enforces_the_5_mib_minimum(s3_client, s3_bucket):
    upload = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="small-parts")
    etags = []
    for n in (1, 2):
        r = s3_client.upload_part(Bucket=s3_bucket, Key="small-parts", UploadId=upload["UploadId"],
                                  PartNumber=n, Body=b"x" * MiB)
        etags.append({"PartNumber": n, "ETag": r["ETag"]})
    with pytest.raises(ClientError, match="EntityTooSmall"):
        s3_client.complete_multipart_upload(Bucket=s3_bucket, Key="small-parts", UploadId=upload["UploadId"],
                                            MultipartUpload={"Parts": etags})


@pytest.fixture()
def unreachable_s3(app, monkeypatch):
    """Point the app's control client at a closed port (the presigner is unaffected)."""
    config = {**app.config, "S3_ENDPOINT_URL": "http://127.0.0.1:9", "OAREPO_S3_MAX_ATTEMPTS": 1,
              "OAREPO_S3_CONNECT_TIMEOUT": 1}
    state = current_oarepo_s3._get_current_object()
    _ = state.presigner  # built from the good endpoint (a cached property) before the switch
    monkeypatch.setitem(state.__dict__, "s3", S3Client.from_config(config))
    return monkeypatch


@pytest.fixture()
def uploaded(location):
    record = Record.create({})
    db.session.commit()
    payload = random_bytes(6 * MiB, seed=31)
    mu = MultipartUpload(key="f.bin", base_uri=None, expires=3600, size=len(payload), part_size=5 * MiB)
    record.files["f.bin"] = mu
    record.commit()
    db.session.commit()
    put_parts(mu.session, payload)
    return record, mu, payload


def test_complete_while_s3_is_down_changes_nothing_and_can_be_retried(uploaded, unreachable_s3):
    record, mu, payload = uploaded
    with pytest.raises(S3Unavailable, match="list_parts failed at http://127.0.0.1:9"):
        complete_upload(mu.session["id"], None)
    db.session.rollback()
    row = db.session.get(MultipartUploadSession, mu.session["id"])
    assert row.status is MultipartUploadStatus.IN_PROGRESS and row.checksum is None
    assert record.files["f.bin"].obj.file.readable is False

    unreachable_s3.undo()
    assert complete_upload(row.id, None).status is MultipartUploadStatus.COMPLETE


def test_abort_while_s3_is_down_keeps_the_upload(uploaded, unreachable_s3, s3_client):
    record, mu, _ = uploaded
    with pytest.raises(S3Unavailable):
        abort_upload(mu.session["id"])
    db.session.rollback()
    assert db.session.get(MultipartUploadSession, mu.session["id"]).status is MultipartUploadStatus.IN_PROGRESS
    assert record.files["f.bin"].obj is not None
    unreachable_s3.undo()
    assert abort_upload(mu.session["id"]).status is MultipartUploadStatus.ABORTED


def test_s3_error_names_s3s_code(uploaded, s3_client):
    record, mu, _ = uploaded
    s3 = current_oarepo_s3.s3
    with pytest.raises(S3Error) as e:
        s3.list_parts("no-such-bucket-here", "k", "u")
    assert e.value.s3_code == "NoSuchBucket" and e.value.code == 503
    assert "NoSuchBucket" in e.value.get_body()
    assert ("Retry-After", "5") in e.value.get_headers()


def test_pending_file_is_not_downloadable_over_http(uploaded, live_server):
    record, mu, _ = uploaded
    response = requests.get(f"{live_server.url}/files/{record.bucket_id}/f.bin", allow_redirects=False, timeout=30)
    # files-rest's own view answers its "unreadable file" error; no redirect to S3 is handed out.
    assert response.status_code == 503 and "Location" not in response.headers
