"""S3FileStorage keeps invenio-s3's behaviour for ordinary streams."""

from __future__ import annotations

import hashlib
from io import BytesIO
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from invenio_db import db
from invenio_files_rest.models import Bucket, ObjectVersion

from oarepo_s3.storage import S3FileStorage

from .helpers import random_bytes


@pytest.fixture()
def bucket(location):
    bucket = Bucket.create()
    db.session.commit()
    return bucket


def test_small_stream_is_saved_with_md5(bucket, s3_client, s3_bucket):
    payload = random_bytes(300_000, seed=11)
    obj = ObjectVersion.create(bucket, "small.bin", stream=BytesIO(payload))
    db.session.commit()
    assert isinstance(obj.file.storage(), S3FileStorage)
    assert obj.file.readable and obj.file.size == len(payload)
    assert obj.file.checksum == f"md5:{hashlib.md5(payload).hexdigest()}"
    assert obj.file.uri.startswith(f"s3://{s3_bucket}/")
    with obj.file.storage().open() as fp:
        assert fp.read() == payload


def test_download_is_a_redirect_to_a_presigned_get(app, bucket, live_server):
    payload = "naïve café ✓\n".encode() * 1000
    ObjectVersion.create(bucket, "résumé ✓.txt", stream=BytesIO(payload))
    db.session.commit()
    url = f"{live_server.url}/files/{bucket.id}/résumé ✓.txt"
    response = requests.get(url, allow_redirects=False, timeout=30)
    assert response.status_code == 302
    location = response.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == [str(app.config["S3_URL_EXPIRATION"])]
    assert query["response-content-type"] == ["text/plain; charset=utf-8"] or query["response-content-type"]
    got = requests.get(url, timeout=30)
    assert got.status_code == 200 and got.content == payload
    assert live_server.received_bytes == 0


def test_attachment_download_names_the_file(app, bucket, live_server):
    ObjectVersion.create(bucket, "data ✓.bin", stream=BytesIO(b"\x00\x01\x02"))
    db.session.commit()
    got = requests.get(f"{live_server.url}/files/{bucket.id}/data ✓.bin?download", timeout=30)
    assert got.status_code == 200 and got.content == b"\x00\x01\x02"
    disposition = got.headers["Content-Disposition"]
    assert disposition.startswith("attachment")
    assert "filename*=UTF-8''data%20%E2%9C%93.bin" in disposition


def test_delete_removes_the_object(bucket, s3_client, s3_bucket):
    obj = ObjectVersion.create(bucket, "gone.txt", stream=BytesIO(b"bye"))
    db.session.commit()
    key = obj.file.uri.split("/", 3)[3]
    assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ContentLength"] == 3
    obj.file.storage().delete()
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_copy_between_objects_is_server_side(bucket):
    src = ObjectVersion.create(bucket, "a.txt", stream=BytesIO(b"copy me"))
    dst = ObjectVersion.create(bucket, "b.txt", _file_id=None)
    db.session.commit()
    from invenio_files_rest.models import FileInstance

    fi = FileInstance.create()
    fi.copy_contents(src.file, default_location=bucket.location.uri)
    dst.set_file(fi)
    db.session.commit()
    assert dst.file.size == 7 and dst.file.checksum == src.file.checksum
    assert dst.file.uri != src.file.uri
    with dst.file.storage().open() as fp:
        assert fp.read() == b"copy me"
