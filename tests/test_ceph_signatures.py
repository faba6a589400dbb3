"""What moto cannot show: a real S3 (Ceph RGW) checks our signatures, expiry and limits.

Ceph only (conftest deselects ``test_ceph_*`` modules on other backends). When
``ceph`` is among ``OAREPO_S3_TEST_BACKENDS`` and the gateway does not start,
these tests fail with its log: they are never skipped.

Every URL here comes from the app's own presigner (``current_oarepo_s3.presigner``,
through :func:`oarepo_s3.service.sign_parts` or the storage's download redirect).
"""

from __future__ import annotations

import base64
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from io import BytesIO
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest
import requests
from invenio_db import db
from invenio_files_rest.models import Bucket, ObjectVersion
from invenio_records_files.api import Record

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.proxies import current_oarepo_s3
from oarepo_s3.s3 import S3Client, build_boto3_client
from oarepo_s3.service import ReportedPart, complete_upload, get_session, list_uploaded_parts, sign_parts

from .helpers import fresh_random_bytes, random_bytes

KiB = 1024
MiB = 1024 * KiB
SIZE = 5 * MiB + 1000  # two parts: 5 MiB and a 1000-byte tail


@pytest.fixture(scope="module")
def app_config(app_config, database_uri):
    """This module's app accepts 1 KiB parts (for the 1,001-part upload).

    Only the app's planning rule is lowered here; the gateway keeps S3's
    5 MiB until a test lowers ``rgw_multipart_min_part_size`` for itself.
    (``database_uri`` is named so that pytest parametrises this override too.)
    """
    return {**app_config, "OAREPO_S3_MIN_PART_SIZE": KiB}


@pytest.fixture(autouse=True)
def _ceph_only(s3_backend):
    """Belt and braces: a test here run against another backend proves nothing."""
    assert s3_backend.name == "ceph", f"test_ceph_* ran on {s3_backend.name}"


@pytest.fixture()
def record(location):
    record = Record.create({})
    db.session.commit()
    return record


def start(record, key="data.bin", size=SIZE, part_size=5 * MiB, expires=3600):
    mu = MultipartUpload(key=key, base_uri=record.files.bucket.location.uri, expires=expires, size=size,
                         part_size=part_size)
    record.files[key] = mu
    record.commit()
    db.session.commit()
    return mu


def part_body(payload, session, n):
    chunk = session["chunk_size"]
    return payload[(n - 1) * chunk : n * chunk]


def s3_error_code(response) -> str:
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else text[:200]


def with_query_value(url: str, name: str, value: str) -> str:
    """The URL with one query parameter's (already encoded) value replaced, all else byte-identical."""
    parts = urlsplit(url)
    pairs = [p.split("=", 1) for p in parts.query.split("&")]
    assert name in [k for k, _ in pairs], f"{name} not in {url}"
    query = "&".join(f"{k}={value if k == name else v}" for k, v in pairs)
    return urlunsplit(parts._replace(query=query))


def query_value(url: str, name: str) -> str:
    return dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))[name]


def flip_signature(url: str) -> str:
    signature = query_value(url, "X-Amz-Signature")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    return with_query_value(url, "X-Amz-Signature", flipped)


def one_second_earlier(url: str) -> str:
    stamp = datetime.strptime(query_value(url, "X-Amz-Date"), "%Y%m%dT%H%M%SZ") - timedelta(seconds=1)
    return with_query_value(url, "X-Amz-Date", stamp.strftime("%Y%m%dT%H%M%SZ"))


TAMPERS = {
    "partNumber": lambda url: with_query_value(url, "partNumber", "2"),
    "X-Amz-Expires": lambda url: with_query_value(
        url, "X-Amz-Expires", str(int(query_value(url, "X-Amz-Expires")) + 1)
    ),
    "X-Amz-Date": one_second_earlier,
    "signature": flip_signature,
    "key": lambda url: url.replace("/data?", "/datb?", 1),
}


def test_presigned_upload_part_urls_work(record, s3_client):
    payload = random_bytes(SIZE, seed=41)
    mu = start(record)
    row = get_session(mu.session["id"])
    urls = sign_parts(row, [1, 2])
    etags = {}
    for n, url in urls.items():
        response = requests.put(url, data=part_body(payload, mu.session, n), timeout=60)
        assert response.status_code == 200, response.text
        etags[n] = response.headers["ETag"]
    row = complete_upload(row.id, [ReportedPart(n, etag) for n, etag in etags.items()])
    assert row.status is MultipartUploadStatus.COMPLETE
    got = s3_client.get_object(Bucket=mu.session["bucket"], Key=mu.session["key"])["Body"].read()
    assert got == payload


@pytest.mark.parametrize("what", sorted(TAMPERS))
def test_tampered_upload_part_url_is_refused(record, s3_client, what):
    payload = random_bytes(SIZE, seed=42)
    mu = start(record)
    row = get_session(mu.session["id"])
    url = sign_parts(row, [1])[1]
    bad = TAMPERS[what](url)
    assert bad != url

    response = requests.put(bad, data=part_body(payload, mu.session, 1), timeout=60)
    assert response.status_code == 403, (what, response.status_code, response.text)
    assert s3_error_code(response) == "SignatureDoesNotMatch"
    assert list_uploaded_parts(row) == [], "a refused request must store nothing"
    # The URL as signed still works: the 403 was the tampering, nothing else.
    assert requests.put(url, data=part_body(payload, mu.session, 1), timeout=60).status_code == 200
    assert [p.number for p in list_uploaded_parts(row)] == [1]


def test_expired_upload_part_url_is_refused_and_re_signing_works(record):
    payload = random_bytes(SIZE, seed=43)
    mu = start(record)
    row = get_session(mu.session["id"])
    presigner = current_oarepo_s3.presigner
    bucket = current_oarepo_s3.s3.bucket_name(row.s3_bucket)
    body = part_body(payload, mu.session, 2)
    signed_at = time.time() - 3  # 3 s ago, valid for 1 s: expired 2 s ago, no sleeping

    expired = presigner.upload_part_url(bucket, row.s3_key, row.upload_id, 2, expires_in=1, now=signed_at)
    response = requests.put(expired, data=body, timeout=60)
    assert response.status_code == 403, response.text
    assert s3_error_code(response) == "AccessDenied"
    # Same instant, longer life: accepted, so it was the expiry that was refused, not the instant.
    alive = presigner.upload_part_url(bucket, row.s3_key, row.upload_id, 2, expires_in=60, now=signed_at)
    assert alive != expired
    assert list_uploaded_parts(row) == []

    # The client asks for fresh URLs (sign_parts again) and carries on.
    fresh = sign_parts(row, [2])[2]
    assert requests.put(fresh, data=body, timeout=60).status_code == 200
    assert requests.put(alive, data=body, timeout=60).status_code == 200
    assert [p.number for p in list_uploaded_parts(row)] == [2]


def test_content_md5_signed_into_a_part_url_is_verified(record):
    """Ceph ignores x-amz-checksum-*, but verifies Content-MD5: the portable integrity check."""
    mu = start(record, size=1000, part_size=None)
    row = get_session(mu.session["id"])
    body = fresh_random_bytes(1000)
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    url = current_oarepo_s3.presigner.upload_part_url(
        current_oarepo_s3.s3.bucket_name(row.s3_bucket), row.s3_key, row.upload_id, 1, expires_in=60,
        content_md5=md5,
    )
    corrupted = requests.put(url, data=body[:-1] + bytes([body[-1] ^ 1]), headers={"Content-MD5": md5}, timeout=60)
    assert corrupted.status_code == 400 and s3_error_code(corrupted) == "BadDigest", corrupted.text
    unsent = requests.put(url, data=body, timeout=60)  # the signed header left out
    assert unsent.status_code == 403, unsent.text
    ok = requests.put(url, data=body, headers={"Content-MD5": md5}, timeout=60)
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"].strip('"') == hashlib.md5(body).hexdigest()


@pytest.fixture()
def stored_file(location, live_server):
    payload = "naïve café ✓\n".encode() * 300
    bucket = Bucket.create()
    db.session.commit()
    ObjectVersion.create(bucket, "notes.txt", stream=BytesIO(payload))
    db.session.commit()
    return f"{live_server.url}/files/{bucket.id}/notes.txt", payload


def test_download_redirect_is_a_working_presigned_get(app, stored_file):
    url, payload = stored_file
    redirect = requests.get(url, allow_redirects=False, timeout=30)
    assert redirect.status_code == 302
    location = redirect.headers["Location"]
    assert location.startswith(app.config["S3_ENDPOINT_URL"] + "/")
    got = requests.get(location, timeout=30)
    assert got.status_code == 200 and got.content == payload
    # S3 answers with the response-content-type signed into the URL.
    assert got.headers["Content-Type"] == unquote(query_value(location, "response-content-type"))
    assert got.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("what", ["signature", "X-Amz-Expires", "response-content-type", "key"])
def test_tampered_download_url_is_refused(stored_file, what):
    url, _ = stored_file
    location = requests.get(url, allow_redirects=False, timeout=30).headers["Location"]
    tamper = {
        "signature": flip_signature,
        "X-Amz-Expires": lambda u: with_query_value(u, "X-Amz-Expires", "3600"),
        "response-content-type": lambda u: with_query_value(u, "response-content-type", "text%2Fhtml"),
        "key": lambda u: u.replace("/data?", "/datb?", 1),
    }[what]
    bad = tamper(location)
    assert bad != location
    response = requests.get(bad, timeout=30)
    assert response.status_code == 403, (what, response.status_code, response.text)
    assert s3_error_code(response) == "SignatureDoesNotMatch"


def test_expired_download_url_is_refused(stored_file):
    url, payload = stored_file
    location = requests.get(url, allow_redirects=False, timeout=30).headers["Location"]
    bucket, key = urlsplit(location).path.lstrip("/").split("/", 1)
    presigner = current_oarepo_s3.presigner
    signed_at = time.time() - 3
    expired = presigner.get_object_url(bucket, key, expires_in=1, now=signed_at)
    response = requests.get(expired, timeout=30)
    assert response.status_code == 403 and s3_error_code(response) == "AccessDenied", response.text
    same_instant = presigner.get_object_url(bucket, key, expires_in=60, now=signed_at)
    assert requests.get(same_instant, timeout=30).content == payload


PARTS = 1001


def test_upload_of_more_than_1000_parts_pages_through_list_parts(s3_backend, record, s3_client, monkeypatch):
    """1,001 parts of 1 KiB: ListParts needs two pages; the completion's empty ETag is filled in.

    Ceph's minimum part size is lowered at runtime for this test only (the
    app's via this module's ``app_config``), so the upload stays small.
    """
    payload = fresh_random_bytes((PARTS - 1) * KiB + 517)
    with s3_backend.rgw_config("rgw_multipart_min_part_size", KiB):
        mu = start(record, key="many.bin", size=len(payload), part_size=KiB)
        session = mu.session
        assert session["num_chunks"] == PARTS and len(session["parts_url"]) == PARTS

        def put(n):
            response = requests.put(session["parts_url"][n - 1], data=part_body(payload, session, n), timeout=60)
            assert response.status_code == 200, response.text
            return ReportedPart(n, response.headers["ETag"])

        with ThreadPoolExecutor(8) as pool:
            reported = list(pool.map(put, range(1, PARTS + 1)))

        # S3 (and Ceph) answer at most 1,000 parts a page.
        first = s3_client.list_parts(Bucket=session["bucket"], Key=session["key"], UploadId=session["upload_id"])
        assert len(first["Parts"]) == 1000 and first["IsTruncated"] is True
        assert first["NextPartNumberMarker"] == 1000
        assert [p.number for p in list_uploaded_parts(get_session(session["id"]))] == list(range(1, PARTS + 1))

        answered = []
        real_complete = S3Client.complete_multipart_upload

        def spy(self, *args, **kwargs):
            answered.append(real_complete(self, *args, **kwargs))
            return answered[-1]

        monkeypatch.setattr(S3Client, "complete_multipart_upload", spy)
        row = complete_upload(session["id"], reported)

    assert row.status is MultipartUploadStatus.COMPLETE
    assert answered == [""], "Ceph RGW 16 answers CompleteMultipartUpload with an empty ETag"
    digests = b"".join(hashlib.md5(part_body(payload, session, n)).digest() for n in range(1, PARTS + 1))
    expected = f"{hashlib.md5(digests).hexdigest()}-{PARTS}"
    assert row.checksum == f"s3etag:{expected}"
    head = s3_client.head_object(Bucket=session["bucket"], Key=session["key"])
    assert head["ETag"].strip('"') == expected and head["ContentLength"] == len(payload)
    assert ObjectVersion.get(record.bucket, "many.bin").file.checksum == row.checksum
    got = s3_client.get_object(Bucket=session["bucket"], Key=session["key"])["Body"].read()
    assert got == payload


def test_completion_done_in_s3_but_not_in_the_books_is_recovered(record, s3_client):
    """A crash between S3's Complete and the commit: the retry finds NoSuchUpload and HeadObject's ETag.

    On Ceph this path never sees an ETag from CompleteMultipartUpload at all.
    """
    payload = random_bytes(SIZE, seed=44)
    mu = start(record)
    session = mu.session
    parts = []
    for n, url in enumerate(session["parts_url"], start=1):
        response = requests.put(url, data=part_body(payload, session, n), timeout=60)
        parts.append({"PartNumber": n, "ETag": response.headers["ETag"]})
    done = s3_client.complete_multipart_upload(Bucket=session["bucket"], Key=session["key"],
                                               UploadId=session["upload_id"], MultipartUpload={"Parts": parts})
    assert done.get("ETag", "") == ""  # Ceph RGW 16's answer
    row = complete_upload(session["id"], None)
    assert row.status is MultipartUploadStatus.COMPLETE
    head = s3_client.head_object(Bucket=session["bucket"], Key=session["key"])
    assert row.checksum == f"s3etag:{head['ETag'].strip(chr(34))}"
    digests = b"".join(hashlib.md5(part_body(payload, session, n)).digest() for n in (1, 2))
    assert row.checksum == f"s3etag:{hashlib.md5(digests).hexdigest()}-2"
    assert ObjectVersion.get(record.bucket, "data.bin").file.readable


def test_gateway_keeps_the_5_mib_minimum_outside_that_test(s3_backend):
    assert int(s3_backend.rgw_config_get("rgw_multipart_min_part_size")) == 5 * MiB


def test_control_client_checksum_settings_work_on_ceph(app, s3_bucket):
    """build_boto3_client sends checksums only when an operation requires them, and that works here."""
    client = build_boto3_client(app.config)
    assert client.meta.config.signature_version == "s3v4"
    assert client.meta.config.request_checksum_calculation == "when_required"
    assert client.meta.config.response_checksum_validation == "when_required"
    body = fresh_random_bytes(3000)
    client.put_object(Bucket=s3_bucket, Key="control.bin", Body=body)
    assert client.get_object(Bucket=s3_bucket, Key="control.bin")["Body"].read() == body
    s3 = S3Client(client)
    upload_id = s3.create_multipart_upload(s3_bucket, "control-mp.bin", "application/octet-stream")
    client.upload_part(Bucket=s3_bucket, Key="control-mp.bin", UploadId=upload_id, PartNumber=1, Body=body)
    assert [(p.number, p.size, p.etag) for p in s3.list_parts(s3_bucket, "control-mp.bin", upload_id)] == [
        (1, 3000, hashlib.md5(body).hexdigest())
    ]
    assert s3.abort_multipart_upload(s3_bucket, "control-mp.bin", upload_id) is True
    assert s3.abort_multipart_upload(s3_bucket, "control-mp.bin", upload_id) is False  # NoSuchUpload


def test_x_amz_checksum_is_ignored_by_ceph(s3_client, s3_bucket):
    """The quirk docs/s3-compatibility.md states: a wrong x-amz-checksum-crc32 is accepted.

    If this starts failing, Ceph verifies checksums now: update the document.
    """
    wrong = base64.b64encode(b"\x00\x00\x00\x00").decode()
    s3_client.put_object(Bucket=s3_bucket, Key="crc.bin", Body=b"checksum me", ChecksumCRC32=wrong)
    assert s3_client.get_object(Bucket=s3_bucket, Key="crc.bin")["Body"].read() == b"checksum me"
