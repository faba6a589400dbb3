"""Virtual-host and path-style addressing, and a non-default region, against a real Ceph RGW.

The gateway runs with ``rgw_dns_name = s3.ceph.test`` (tests/conftest.py), so
``Host: BUCKET.s3.ceph.test`` names a bucket. The app is configured with the
endpoint ``http://s3.ceph.test:PORT``; this module resolves ``*.ceph.test``
to 127.0.0.1 for its own process (the only DNS there is here), so both the
app's boto3 control calls and the presigned part and download URLs really
travel with those host names and their signatures are checked by RGW.

Ceph only (conftest deselects ``test_ceph_*`` on other backends).
"""

from __future__ import annotations

import socket
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from invenio_db import db
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.proxies import current_oarepo_s3
from oarepo_s3.service import complete_upload

from .conftest import CEPH_DNS_NAME
from .helpers import put_parts, random_bytes

MiB = 1024 * 1024
SETTINGS = [("virtual", "eu-central-1"), ("path", "eu-central-1"), ("virtual", "us-east-1")]


@pytest.fixture(scope="module", autouse=True)
def resolve_ceph_test_names():
    """``*.ceph.test`` -> 127.0.0.1 in this process (everything else resolves as usual)."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and (host == CEPH_DNS_NAME or host.endswith("." + CEPH_DNS_NAME)):
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@pytest.fixture(scope="module", params=SETTINGS, ids=[f"{style}-{region}" for style, region in SETTINGS])
def addressing(request):
    return request.param


@pytest.fixture(scope="module")
def app_config(app_config, database_uri, s3_backend, addressing):
    """The app talks to ``http://s3.ceph.test:PORT`` in the module's style and region."""
    assert s3_backend.name == "ceph", f"test_ceph_* ran on {s3_backend.name}"
    style, region = addressing
    port = urlsplit(s3_backend.endpoint_url).port
    return {**app_config, "S3_ENDPOINT_URL": f"http://{CEPH_DNS_NAME}:{port}", "S3_REGION_NAME": region,
            "OAREPO_S3_ADDRESSING_STYLE": style}


def expected_host_and_prefix(app, bucket: str) -> tuple[str, str]:
    """Where a URL for ``bucket`` must point in the configured style: (host:port, path prefix)."""
    endpoint = urlsplit(app.config["S3_ENDPOINT_URL"])
    if app.config["OAREPO_S3_ADDRESSING_STYLE"] == "virtual":
        return f"{bucket}.{endpoint.netloc}", "/"
    return endpoint.netloc, f"/{bucket}/"


def assert_addressed(app, url: str, bucket: str) -> None:
    host, prefix = expected_host_and_prefix(app, bucket)
    parts = urlsplit(url)
    assert parts.netloc == host and parts.path.startswith(prefix), url
    credential = parse_qs(parts.query)["X-Amz-Credential"][0]
    assert credential.split("/")[2] == app.config["S3_REGION_NAME"], credential


def test_upload_and_download_in_the_configured_style_and_region(app, location, s3_bucket, s3_client, live_server):
    """Parts PUT to the signed URLs, completion and HeadObject by boto3, the 302 download: all through RGW."""
    record = Record.create({})
    db.session.commit()
    payload = random_bytes(5 * MiB + 4321, seed=88)
    mu = MultipartUpload(key="dir/ß.bin", base_uri=location.uri, expires=3600, size=len(payload), part_size=5 * MiB)
    record.files["dir/ß.bin"] = mu
    record.commit()
    db.session.commit()
    assert len(mu.session["parts_url"]) == 2
    for url in mu.session["parts_url"]:
        assert_addressed(app, url, s3_bucket)
    put_parts(mu.session, payload)

    row = complete_upload(mu.session["id"], None)  # ListParts, Complete, HeadObject in the configured style

    assert row.status is MultipartUploadStatus.COMPLETE
    assert s3_client.get_object(Bucket=s3_bucket, Key=row.s3_key)["Body"].read() == payload
    redirect = requests.get(f"{live_server.url}/files/{record.bucket_id}/dir/ß.bin", allow_redirects=False, timeout=30)
    assert redirect.status_code == 302
    assert_addressed(app, redirect.headers["Location"], s3_bucket)
    got = requests.get(redirect.headers["Location"], timeout=30)
    assert got.status_code == 200 and got.content == payload


def test_a_url_signed_for_one_bucket_is_refused_on_another(app, location, s3_bucket, s3_client):
    """The host (virtual) or path (path-style) is signed: pointing a URL at another bucket gives 403."""
    other = f"{s3_bucket}-b"
    s3_client.create_bucket(Bucket=other)
    upload_id = s3_client.create_multipart_upload(Bucket=other, Key="k.bin")["UploadId"]
    own_upload = current_oarepo_s3.s3.create_multipart_upload(s3_bucket, "k.bin", "application/octet-stream")
    url = current_oarepo_s3.presigner.upload_part_url(s3_bucket, "k.bin", own_upload, 1, expires_in=600)
    assert_addressed(app, url, s3_bucket)
    moved = (url.replace(f"//{s3_bucket}.", f"//{other}.", 1) if app.config["OAREPO_S3_ADDRESSING_STYLE"] == "virtual"
             else url.replace(f"/{s3_bucket}/", f"/{other}/", 1)).replace(own_upload, upload_id)
    assert moved != url
    response = requests.put(moved, data=b"x" * 1024, timeout=30)
    assert response.status_code == 403, response.text
    assert b"SignatureDoesNotMatch" in response.content
    assert s3_client.list_parts(Bucket=other, Key="k.bin", UploadId=upload_id).get("Parts", []) == []
