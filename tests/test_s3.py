"""The S3 boundary's own helpers (its calls are tested through the service, against moto and Ceph)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from oarepo_s3.s3 import parse_timestamp


@pytest.mark.parametrize("value", [
    "2026-12-06T16:28:14.000Z",  # ListParts' LastModified (AWS, moto, Ceph)
    "2026-12-06T16:28:14Z",
    "2026-12-06T16:28:14.123456Z",
    "Sun, 06 Dec 2026 16:28:14 GMT",  # HeadObject's Last-Modified header
    "2026-12-06T16:28:14+01:00",  # the rest goes to botocore's parser
    "1700000000",
    1700000000,
])
def test_timestamps_parse_as_botocore_parses_them(value):
    ours, botocores = parse_timestamp(value), botocore_parse_timestamp(value)
    assert ours == botocores
    assert ours.utcoffset() == botocores.utcoffset()


def test_s3s_timestamps_are_aware_utc():
    assert parse_timestamp("2026-12-06T16:28:14.000Z") == datetime(2026, 12, 6, 16, 28, 14, tzinfo=UTC)
    assert parse_timestamp("Sun, 06 Dec 2026 16:28:14 GMT").utcoffset().total_seconds() == 0


def test_the_apps_s3_calls_parse_timestamps_with_it(app, s3_client, s3_bucket, monkeypatch):
    """HeadObject's and ListParts' timestamps never reach botocore's own (dateutil) parser."""
    import botocore.utils

    from oarepo_s3.proxies import current_oarepo_s3

    s3 = current_oarepo_s3.s3
    s3_client.put_object(Bucket=s3_bucket, Key="stamped", Body=b"x")
    upload_id = s3.create_multipart_upload(s3_bucket, "parts", "application/octet-stream")
    s3_client.upload_part(Bucket=s3_bucket, Key="parts", UploadId=upload_id, PartNumber=1, Body=b"x")

    original, this_thread = botocore.utils._parse_timestamp_with_tzinfo, threading.get_ident()

    def botocores(*args, **kwargs):
        if threading.get_ident() == this_thread:  # (moto's server, in its own thread, uses it too)
            raise AssertionError("botocore's parser parsed an S3 timestamp")
        return original(*args, **kwargs)

    monkeypatch.setattr(botocore.utils, "_parse_timestamp_with_tzinfo", botocores)
    assert s3.head_object(s3_bucket, "stamped").size == 1
    assert [p.number for p in s3.list_parts(s3_bucket, "parts", upload_id)] == [1]
    s3.abort_multipart_upload(s3_bucket, "parts", upload_id)
