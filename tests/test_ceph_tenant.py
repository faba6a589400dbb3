"""``S3_TENANT`` against a real multi-tenant Ceph RGW: buckets addressed as ``tenant:bucket``.

Ceph only (conftest deselects ``test_ceph_*`` on other backends; a Ceph that
does not start fails these tests). The app runs as a user of a fresh tenant,
whose buckets live in that tenant's namespace.
"""

from __future__ import annotations

import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from invenio_db import db
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.proxies import current_oarepo_s3
from oarepo_s3.service import complete_upload

from .helpers import put_parts, random_bytes


@pytest.fixture(scope="module")
def tenant(s3_backend):
    """A new RGW tenant with one S3 user; returns (tenant, access key, secret key)."""
    assert s3_backend.name == "ceph", f"test_ceph_* ran on {s3_backend.name}"
    name = f"t{uuid.uuid4().hex[:10]}"
    access, secret = f"{name}-access", f"{name}-secret"
    s3_backend.radosgw_admin("user", "create", f"--tenant={name}", f"--uid={name}-user", f"--display-name={name}",
                             f"--access-key={access}", f"--secret-key={secret}")
    return name, access, secret


@pytest.fixture(scope="module")
def app_config(app_config, database_uri, tenant):
    """The app works as the tenant's user, on ``tenant:bucket`` names (``database_uri`` keeps the lanes)."""
    name, access, secret = tenant
    return {**app_config, "S3_TENANT": name, "S3_ACCESS_KEY_ID": access, "S3_SECRET_ACCESS_KEY": secret}


@pytest.fixture()
def s3_bucket(s3_server, tenant):
    """A bucket in the tenant's namespace (the default test user could not see it)."""
    _, access, secret = tenant
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=access, aws_secret_access_key=secret,
                          region_name="us-east-1", config=Config(signature_version="s3v4"))
    bucket = f"tenant-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return bucket


def test_control_calls_use_tenant_bucket_names(app, location, s3_bucket, tenant):
    s3 = current_oarepo_s3.s3
    assert s3.bucket_name(s3_bucket) == f"{tenant[0]}:{s3_bucket}"
    upload_id = s3.create_multipart_upload(s3_bucket, "k.bin", "application/octet-stream")
    assert [u.upload_id for u in s3.list_multipart_uploads(s3_bucket)] == [upload_id]
    assert s3.abort_multipart_upload(s3_bucket, "k.bin", upload_id) is True


def test_multipart_upload_and_download_with_a_tenant(app, location, live_server):
    record = Record.create({})
    db.session.commit()
    payload = random_bytes(1000, seed=51)
    mu = MultipartUpload(key="t.bin", base_uri=location.uri, expires=3600, size=len(payload), part_size=None)
    record.files["t.bin"] = mu  # signs the part URLs
    record.commit()
    db.session.commit()
    put_parts(mu.session, payload)
    row = complete_upload(mu.session["id"], None)
    assert row.status is MultipartUploadStatus.COMPLETE
    got = requests.get(f"{live_server.url}/files/{record.bucket_id}/t.bin", timeout=30)
    assert got.status_code == 200 and got.content == payload
