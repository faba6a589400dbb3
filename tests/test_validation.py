"""Bad input to MultipartUpload: a clear error naming the field, nothing created anywhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from invenio_db import db
from invenio_files_rest.models import Bucket, FileInstance, ObjectVersion
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload
from oarepo_s3.errors import InvalidUploadRequest, S3Unavailable
from oarepo_s3.models import MultipartUploadSession

MiB = 1024**2
TiB = 1024**4

GOOD = dict(key="data.bin", expires=3600, size=10 * MiB, part_size=None)


@pytest.fixture()
def record(location):
    record = Record.create({})
    db.session.commit()
    return record


def assert_nothing_created(s3_client, bucket_name):
    assert s3_client.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []
    assert db.session.query(MultipartUploadSession).count() == 0
    assert db.session.query(ObjectVersion).count() == 0
    assert db.session.query(FileInstance).count() == 0


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("size", -1, "greater than zero"),
        ("size", 0, "greater than zero"),
        ("size", 1.5, "integer"),
        ("size", "100", "integer"),
        ("size", None, "integer"),
        ("size", 5 * TiB + 1, "at most 5497558138880 bytes"),
        ("part_size", 1 * MiB, "between 5242880 and 5368709120"),
        ("part_size", 6 * 1024**3, "between"),
        ("expires", 0, "between 60 and 604800 seconds"),
        ("expires", -5, "between"),
        ("expires", 8 * 24 * 3600, "between"),
        ("expires", "3600", "number of seconds"),
        ("expires", timedelta(days=30), "between"),
        ("key", "", "non-empty"),
        ("key", None, "non-empty"),
        ("key", "a\x00b", "control, format or separator characters (U+0000)"),
        ("key", "line\nbreak", "control, format or separator characters (U+000A)"),
        ("key", "tab\there", "control, format or separator characters (U+0009)"),
        ("key", "evil\u202etxt.exe", "control, format or separator characters (U+202E)"),
        ("key", "zero\u200bwidth", "control, format or separator characters (U+200B)"),
        ("key", "para\u2029graph", "control, format or separator characters (U+2029)"),
        ("key", "x" * 256, "at most 255 characters"),
        ("key", "é" * 256, "at most 255 characters"),
        ("key", "\ud800", "no lone surrogates"),
        ("key", "a/content", "reserved by the API's URLs"),
        ("key", "a/../b", "'..' segments"),
        ("content_type", "tëxt/plain", "printable ASCII"),
        ("content_type", "text/plain\r\nX-Evil: 1", "printable ASCII"),
        ("content_type", "", "printable ASCII"),
        ("content_type", "a/" + "b" * 254, "at most 255"),
        ("content_type", 5, "printable ASCII"),
    ],
)
def test_bad_input_names_field_and_rule(app, record, s3_client, s3_bucket, field, value, rule):
    kwargs = {**GOOD, field: value}
    with pytest.raises(InvalidUploadRequest) as e:
        mu = MultipartUpload(base_uri=record.files.bucket.location.uri, **kwargs)
        record.files[mu.key] = mu
    assert e.value.field == field
    assert rule in str(e.value)
    assert e.value.code == 400
    body = e.value.get_body()
    assert f'"field": "{field}"' in body
    db.session.rollback()
    assert_nothing_created(s3_client, s3_bucket)


def test_key_of_files_rests_longest_length_is_fine(app, record):
    """files-rest's ``FILES_REST_OBJECT_KEY_MAX_LEN`` (255 characters) is the one key length limit."""
    MultipartUpload(base_uri=None, **{**GOOD, "key": "ké✓" * 85})


def test_part_size_giving_too_many_parts(app, record, s3_client, s3_bucket):
    with pytest.raises(InvalidUploadRequest, match="parts; at most 10000") as e:
        MultipartUpload(base_uri=None, key="big", expires=3600, size=60_000 * MiB, part_size=5 * MiB)
    assert e.value.field == "part_size"
    assert_nothing_created(s3_client, s3_bucket)


def test_wrong_base_uri_creates_nothing(app, record, s3_client, s3_bucket):
    mu = MultipartUpload(base_uri="s3://some-other-bucket", **GOOD)
    with pytest.raises(InvalidUploadRequest) as e:
        record.files["data.bin"] = mu
    assert e.value.field == "base_uri"
    db.session.rollback()
    assert_nothing_created(s3_client, s3_bucket)


def test_bucket_quota_is_enforced_before_s3(app, record, s3_client, s3_bucket):
    bucket = Bucket.get(record.bucket_id)
    bucket.quota_size = 5 * MiB
    db.session.commit()
    mu = MultipartUpload(base_uri=None, **GOOD)
    with pytest.raises(InvalidUploadRequest, match="exceeds the bucket's limit") as e:
        record.files["data.bin"] = mu
    assert e.value.field == "size"
    db.session.rollback()
    assert_nothing_created(s3_client, s3_bucket)


def test_s3_unreachable_names_the_endpoint(app, record, s3_client, s3_bucket, monkeypatch):
    from oarepo_s3.proxies import current_oarepo_s3
    from oarepo_s3.s3 import S3Client

    config = {**app.config, "S3_ENDPOINT_URL": "http://127.0.0.1:9", "OAREPO_S3_MAX_ATTEMPTS": 1,
              "OAREPO_S3_CONNECT_TIMEOUT": 1}
    state = current_oarepo_s3._get_current_object()
    monkeypatch.setitem(state.__dict__, "s3", S3Client.from_config(config))
    mu = MultipartUpload(base_uri=None, **GOOD)
    with pytest.raises(S3Unavailable) as e:
        record.files["data.bin"] = mu
    assert "http://127.0.0.1:9" in str(e.value) and "create_multipart_upload" in str(e.value)
    assert e.value.code == 503
    db.session.rollback()
    monkeypatch.undo()
    assert_nothing_created(s3_client, s3_bucket)
