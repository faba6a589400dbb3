"""The draft-records REST API over real HTTP, with real bytes to S3."""

from __future__ import annotations

from urllib.parse import quote

import requests

from ..helpers import put_parts, random_bytes
from .conftest import start_upload

MiB = 1024 * 1024


def test_create_and_get_draft(owner, draft):
    assert draft["status"] == "draft" and draft["owners"] == [owner.id]
    assert draft["metadata"] == {"title": "test draft"}
    got = owner.api().get(draft["links"]["self"], timeout=30)
    assert got.status_code == 200 and got.json()["id"] == draft["id"]


def test_multipart_upload_round_trip_sends_no_payload_through_the_app(owner, draft, live_server):
    payload = random_bytes(2 * 5 * MiB + 77, seed=41)
    api = owner.api()
    created = start_upload(owner, draft, size=len(payload), part_size=5 * MiB,
                           multipart_content_type="application/x-test")
    session = created["multipart_upload"]
    assert created["status"] == "pending" and session["num_chunks"] == 3
    assert len(session["parts_url"]) == 3
    assert set(created["links"]) == {"self", "multipart", "sign", "complete", "abort"}
    received_before = live_server.received_bytes
    parts = put_parts(session, payload)
    done = api.post(created["links"]["complete"], json={"parts": parts}, timeout=60)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "completed" and body["size"] == len(payload)
    assert body["checksum"].startswith("s3etag:") and body["checksum"].endswith("-3")
    listing = api.get(draft["links"]["files"], timeout=30).json()["entries"]
    assert [(f["key"], f["status"], f["mimetype"], f["size"]) for f in listing] == [
        ("data.bin", "completed", "application/x-test", len(payload))
    ]
    content = api.get(listing[0]["links"]["content"], allow_redirects=False, timeout=30)
    assert content.status_code == 302
    assert requests.get(content.headers["Location"], timeout=60).content == payload
    # The app received only the small JSON of the complete call, no payload byte.
    assert live_server.received_bytes - received_before < 2_000


def test_seed_form_encoded_start(owner, draft):
    r = owner.api().post(f"{draft['links']['files']}?multipart=True",
                         data={"key": "form.txt", "size": "1024", "multipart_content_type": "text/plain"}, timeout=30)
    assert r.status_code == 201, r.text
    assert r.json()["multipart_upload"]["size"] == 1024


def test_resume_after_the_client_dropped_midway(owner, draft):
    payload = random_bytes(3 * 5 * MiB, seed=42)
    api = owner.api()
    created = start_upload(owner, draft, key="big.bin", size=len(payload), part_size=5 * MiB)
    put_parts(created["multipart_upload"], payload, numbers={1, 3})
    # A new client (fresh HTTP session, nothing remembered) asks what S3 already holds.
    fresh = owner.api()
    state = fresh.get(created["links"]["multipart"], timeout=30)
    assert state.status_code == 200
    held = {p["PartNumber"] for p in state.json()["parts"]}
    assert held == {1, 3}
    assert all(p["Size"] == 5 * MiB for p in state.json()["parts"])
    missing = sorted(set(range(1, state.json()["num_chunks"] + 1)) - held)
    signed = fresh.post(created["links"]["sign"], json={"parts": missing}, timeout=30).json()
    for part in signed["parts"]:
        n = part["PartNumber"]
        assert requests.put(part["url"], data=payload[(n - 1) * 5 * MiB : n * 5 * MiB], timeout=60).status_code == 200
    done = fresh.post(created["links"]["complete"], json={}, timeout=60)  # no parts: use S3's list
    assert done.status_code == 200 and done.json()["status"] == "completed"
    content = api.get(done.json()["links"]["content"], timeout=60)
    assert content.content == payload


def test_complete_twice_returns_the_same_file(owner, draft):
    payload = b"x" * 1234
    created = start_upload(owner, draft, size=len(payload))
    parts = put_parts(created["multipart_upload"], payload)
    first = owner.api().post(created["links"]["complete"], json={"parts": parts}, timeout=30)
    again = owner.api().post(created["links"]["complete"], json={"parts": parts}, timeout=30)
    assert first.status_code == again.status_code == 200
    assert first.json()["checksum"] == again.json()["checksum"]


def test_abort_then_abort_again_is_404(owner, draft, state):
    created = start_upload(owner, draft)
    before_abort = state()
    assert len(before_abort["s3_uploads"]) == 1
    r = owner.api().post(created["links"]["abort"], timeout=30)
    assert r.status_code == 204
    after = state()
    assert after["s3_uploads"] == [] and after["objects"] == []
    again = owner.api().post(created["links"]["abort"], timeout=30)
    assert again.status_code == 404 and again.json()["status"] == 404


def test_delete_pending_and_completed_files(owner, draft, state):
    pending = start_upload(owner, draft, key="pending.bin")
    done = start_upload(owner, draft, key="done.bin", size=10)
    parts = put_parts(done["multipart_upload"], b"0123456789")
    assert owner.api().post(done["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
    assert len(state()["s3_objects"]) == 1
    assert owner.api().delete(pending["links"]["self"], timeout=30).status_code == 204
    assert owner.api().delete(done["links"]["self"], timeout=30).status_code == 204
    after = state()
    assert after["s3_uploads"] == [] and after["s3_objects"] == [] and after["objects"] == []
    assert owner.api().get(draft["links"]["files"], timeout=30).json()["entries"] == []


def test_pending_file_content_is_409(owner, draft):
    created = start_upload(owner, draft)
    r = owner.api().get(created["links"]["self"] + "/content", allow_redirects=False, timeout=30)
    assert r.status_code == 409 and "still being uploaded" in r.json()["message"]


def test_download_names_the_file_rfc6266(owner, draft):
    key = "données ✓.txt"
    payload = "héllo".encode()
    created = start_upload(owner, draft, key=key, size=len(payload))
    parts = put_parts(created["multipart_upload"], payload)
    owner.api().post(created["links"]["complete"], json={"parts": parts}, timeout=30)
    r = owner.api().get(created["links"]["self"] + "/content", timeout=30)
    assert r.status_code == 200 and r.content == payload
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith("attachment") and f"filename*=UTF-8''{quote(key, safe='!#$&+-.^_`|~')}" in disposition


def test_keys_with_slashes(owner, draft):
    created = start_upload(owner, draft, key="folder/sub/data.csv", size=5)
    assert created["key"] == "folder/sub/data.csv"
    got = owner.api().get(created["links"]["self"], timeout=30)
    assert got.status_code == 200 and got.json()["key"] == "folder/sub/data.csv"


def test_publish(owner, draft, live_server, app):
    api = owner.api()
    created = start_upload(owner, draft, key="paper.pdf", size=4)
    refused = api.post(draft["links"]["publish"], timeout=30)
    assert refused.status_code == 409 and "paper.pdf" in refused.json()["message"]
    parts = put_parts(created["multipart_upload"], b"%PDF")
    api.post(created["links"]["complete"], json={"parts": parts}, timeout=30)
    published = api.post(draft["links"]["publish"], timeout=30)
    assert published.status_code == 200 and published.json()["status"] == "published"

    record_url = published.json()["links"]["self"]
    assert record_url == f"{live_server.url}{app.config['OAREPO_S3_RECORDS_URL_PREFIX']}/{draft['id']}"
    anonymous = requests.Session()
    assert anonymous.get(record_url, timeout=30).json()["status"] == "published"
    files = anonymous.get(record_url + "/files/", timeout=30).json()["entries"]
    assert [f["key"] for f in files] == ["paper.pdf"]
    assert anonymous.get(files[0]["links"]["content"], timeout=30).content == b"%PDF"
    # Read-only now.
    late = api.post(f"{draft['links']['files']}?multipart=True", json={"key": "late.bin", "size": 1}, timeout=30)
    assert late.status_code == 404
    assert api.delete(created["links"]["self"], timeout=30).status_code == 404
    # A draft is not visible as a published record.
    other = api.post(f"{live_server.url}{app.config['OAREPO_S3_DRAFTS_URL_PREFIX']}/", json={}, timeout=30).json()
    assert anonymous.get(other["links"]["record"], timeout=30).status_code == 404


def test_content_md5_is_signed_into_the_url(owner, draft):
    import base64
    import hashlib

    payload = b"integrity matters"
    created = start_upload(owner, draft, key="md5.bin", size=len(payload))
    digest = base64.b64encode(hashlib.md5(payload).digest()).decode()
    signed = owner.api().post(created["links"]["sign"], json={"parts": [1], "content_md5": {"1": digest}}, timeout=30)
    assert signed.status_code == 200, signed.text
    part = signed.json()["parts"][0]
    assert part["headers"] == {"Content-MD5": digest}
    assert "X-Amz-SignedHeaders=content-length%3Bcontent-md5%3Bhost" in part["url"]
    assert requests.put(part["url"], data=payload, headers=part["headers"], timeout=30).status_code == 200
    bad = owner.api().post(created["links"]["sign"], json={"parts": [1], "content_md5": {"1": "nope"}}, timeout=30)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "content_md5.1"
    bad = owner.api().post(created["links"]["sign"], json={"parts": [1], "content_md5": {"2": digest}}, timeout=30)
    assert bad.status_code == 400


def test_content_sha256_is_signed_as_the_payload_hash(owner, draft, s3_backend):
    """``content_sha256``: S3 servers that check signatures refuse bytes with another SHA-256."""
    import hashlib

    payload = b"integrity, cheaper" * 100
    created = start_upload(owner, draft, key="sha.bin", size=len(payload))
    digest = hashlib.sha256(payload).hexdigest()
    sign = created["links"]["sign"]
    signed = owner.api().post(sign, json={"parts": [1], "content_sha256": {"1": digest}}, timeout=30)
    assert signed.status_code == 200, signed.text
    part = signed.json()["parts"][0]
    assert part["headers"] == {"x-amz-content-sha256": digest}
    assert "X-Amz-SignedHeaders=content-length%3Bhost%3Bx-amz-content-sha256" in part["url"]
    if s3_backend.name == "ceph":  # moto checks no signature, so only a real server can refuse
        damaged = requests.put(part["url"], data=payload[:-1] + b"?", headers=part["headers"], timeout=30)
        assert damaged.status_code == 400 and b"XAmzContentSHA256Mismatch" in damaged.content, damaged.text
    assert requests.put(part["url"], data=payload, headers=part["headers"], timeout=30).status_code == 200
    for body, field in (({"1": digest.upper()}, "content_sha256.1"), ({"1": digest[:-1]}, "content_sha256.1"),
                        ({"2": digest}, "content_sha256.2")):
        bad = owner.api().post(sign, json={"parts": [1], "content_sha256": body}, timeout=30)
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == field, bad.text


def test_empty_file_is_created_complete_without_an_upload(owner, draft, s3_client, s3_bucket):
    """Size 0: S3 has no multipart upload of zero parts, so the server writes the empty object itself."""
    files = f"{draft['links']['files']}?multipart=True"
    created = owner.api().post(files, json={"key": "docs/.keep", "size": 0, "multipart_content_type": "text/plain"},
                               timeout=30)
    assert created.status_code == 201, created.text
    data = created.json()
    assert (data["status"], data["size"], data["checksum"]) == ("completed", 0, "md5:d41d8cd98f00b204e9800998ecf8427e")
    assert "multipart_upload" not in data and "sign" not in data["links"]
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    stored = [o for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert [o["Size"] for o in stored] == [0]
    assert s3_client.head_object(Bucket=s3_bucket, Key=stored[0]["Key"])["ContentType"] == "text/plain"
    redirect = owner.api().get(data["links"]["content"], allow_redirects=False, timeout=30)
    assert redirect.status_code == 302
    got = requests.get(redirect.headers["Location"], timeout=30)
    assert got.status_code == 200 and got.content == b""
    again = owner.api().post(files, json={"key": "docs/.keep", "size": 0}, timeout=30)
    assert again.status_code == 409
    published = owner.api().post(draft["links"]["publish"], timeout=30)
    assert published.status_code in (200, 202), published.text


def test_a_key_files_rest_deleted_takes_a_new_upload_with_one_head(owner, draft, db, app):
    """files-rest's own delete (its REST API, records-resources) leaves a delete marker as the key's head:
    a new upload of that key demotes it, so the key has one head and files-rest can delete it again."""
    from invenio_files_rest.models import ObjectVersion

    first = start_upload(owner, draft, key="again.bin", size=10)
    parts = put_parts(first["multipart_upload"], b"0123456789")
    assert owner.api().post(first["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
    db.session.commit()  # a fresh read (SQLite's WAL keeps showing a transaction's first snapshot)
    (version,) = ObjectVersion.query.filter_by(key="again.bin").all()
    bucket_id = version.bucket_id
    ObjectVersion.delete(bucket_id, "again.bin")  # a delete marker: the key's head, with no file
    db.session.commit()

    second = start_upload(owner, draft, key="again.bin", size=7)
    parts = put_parts(second["multipart_upload"], b"abcdefg")
    done = owner.api().post(second["links"]["complete"], json={"parts": parts}, timeout=30)
    assert done.status_code == 200, done.text
    db.session.commit()
    db.session.expire_all()
    heads = ObjectVersion.query.filter_by(bucket_id=bucket_id, key="again.bin", is_head=True).all()
    assert [h.file_id is not None for h in heads] == [True]
    assert owner.api().get(done.json()["links"]["content"], timeout=30).content == b"abcdefg"
    ObjectVersion.delete(bucket_id, "again.bin")  # files-rest finds exactly one head to demote
    db.session.commit()
