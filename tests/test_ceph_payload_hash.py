"""Signed SHA-256 payload hashes (``content_sha256``) against a real Ceph RGW, and RGW 16's empty-body gap.

RGW checks the body of a part PUT against the ``x-amz-content-sha256`` signed
into its URL, except when the body is empty: then it stores a 0-byte part
whatever was signed (seen with 16.2.15). Every part URL also signs the part's
``Content-Length``, so an empty (or any shorter or longer) body no longer
gets that far: RGW refuses its signature. Behind that, completion checks
every part's size against the plan before S3 Complete, for S3s that check no
signatures.

Ceph only (conftest deselects ``test_ceph_*`` on other backends).
"""

from __future__ import annotations

import hashlib

import pytest
import requests
from invenio_db import db
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.errors import PartsMismatch
from oarepo_s3.service import complete_upload, get_session, sign_parts

from .helpers import random_bytes

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _ceph_only(s3_backend):
    assert s3_backend.name == "ceph", f"test_ceph_* ran on {s3_backend.name}"


@pytest.fixture()
def upload(location):
    """A pending two-part upload (5 MiB + 999 bytes) and its payload."""
    record = Record.create({})
    db.session.commit()
    payload = random_bytes(5 * MiB + 999, seed=7)
    mu = MultipartUpload(key="p.bin", base_uri=location.uri, expires=3600, size=len(payload), part_size=5 * MiB)
    record.files["p.bin"] = mu
    record.commit()
    db.session.commit()
    return mu.session, payload


def put_with_sha256(session, n, signed_for: bytes, body: bytes) -> requests.Response:
    digest = hashlib.sha256(signed_for).hexdigest()
    url = sign_parts(get_session(session["id"]), [n], content_sha256={n: digest})[n]
    return requests.put(url, data=body, headers={"x-amz-content-sha256": digest}, timeout=60)


def s3_code(response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in response.text else ""


def test_damaged_or_shortened_body_is_refused(upload, s3_client):
    session, payload = upload
    part = payload[: 5 * MiB]
    damaged = put_with_sha256(session, 1, part, part[:-1] + b"\0")  # the signed length, other bytes
    assert damaged.status_code == 400 and s3_code(damaged) == "XAmzContentSHA256Mismatch", damaged.text
    shortened = put_with_sha256(session, 1, part, part[: len(part) // 2])  # not the signed length
    assert shortened.status_code == 403 and s3_code(shortened) == "SignatureDoesNotMatch", shortened.text
    assert s3_client.list_parts(Bucket=session["bucket"], Key=session["key"],
                                UploadId=session["upload_id"]).get("Parts", []) == []


def test_the_empty_body_gap_is_closed_by_the_signed_length(upload, s3_client):
    session, payload = upload
    part1, part2 = payload[: 5 * MiB], payload[5 * MiB :]
    empty = put_with_sha256(session, 1, part1, b"")
    # RGW 16 would store an empty body whatever SHA-256 was signed; its signed Content-Length refuses it.
    assert empty.status_code == 403 and s3_code(empty) == "SignatureDoesNotMatch", empty.text
    assert put_with_sha256(session, 2, part2, part2).status_code == 200

    with pytest.raises(PartsMismatch, match="parts 1 are not in S3"):
        complete_upload(session["id"], None)
    assert get_session(session["id"]).status is MultipartUploadStatus.IN_PROGRESS
    assert "Contents" not in s3_client.list_objects_v2(Bucket=session["bucket"])

    assert put_with_sha256(session, 1, part1, part1).status_code == 200  # the resumed client sends it
    assert complete_upload(session["id"], None).status is MultipartUploadStatus.COMPLETE
    assert s3_client.get_object(Bucket=session["bucket"], Key=session["key"])["Body"].read() == payload
