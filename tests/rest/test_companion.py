"""The Companion-compatible routes, driven exactly as @uppy/aws-s3 6 drives them (see its CompanionS3.js)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import requests

from ..helpers import random_bytes

MiB = 1024 * 1024


def uppy_base(draft):
    return draft["links"]["uppy"] + "/s3"


def test_uppy_protocol_round_trip(owner, draft, state):
    api = owner.api()
    base = uppy_base(draft)
    payload = random_bytes(12 * MiB + 5, seed=61)
    created = api.post(f"{base}/multipart", json={"filename": "vidéo.mp4", "type": "video/mp4",
                                                  "metadata": {"name": "vidéo.mp4", "size": len(payload)}}, timeout=30)
    assert created.status_code == 200, created.text
    key, upload_id = created.json()["key"], created.json()["uploadId"]
    assert key == "vidéo.mp4"
    query = urlencode({"key": key})
    chunk = 5 * MiB  # what Uppy picks: max(5 MiB, ceil(size / 10000))
    parts = []
    for n, offset in enumerate(range(0, len(payload), chunk), start=1):
        signed = api.get(f"{base}/multipart/{quote(upload_id)}/{n}?{query}", timeout=30)
        assert signed.status_code == 200 and signed.json()["expires"] > 0
        put = requests.put(signed.json()["url"], data=payload[offset : offset + chunk], timeout=60)
        assert put.status_code == 200
        parts.append({"PartNumber": n, "ETag": put.headers["ETag"].strip('"')})
    listed = api.get(f"{base}/multipart/{quote(upload_id)}?{query}", timeout=30).json()
    assert [p["PartNumber"] for p in listed] == [1, 2, 3] and listed[2]["Size"] == 2 * MiB + 5
    batch = api.get(f"{base}/multipart/{quote(upload_id)}/batch?{query}&partNumbers=1,2", timeout=30).json()
    assert set(batch["presignedUrls"]) == {"1", "2"}
    done = api.post(f"{base}/multipart/{quote(upload_id)}/complete?{query}", json={"parts": parts}, timeout=60)
    assert done.status_code == 200, done.text
    assert requests.get(done.json()["location"], headers=api.headers, timeout=60).content == payload
    files = api.get(draft["links"]["files"], timeout=30).json()["entries"]
    assert [(f["key"], f["status"], f["mimetype"]) for f in files] == [("vidéo.mp4", "completed", "video/mp4")]


def test_uppy_abort(owner, draft, state):
    api = owner.api()
    base = uppy_base(draft)
    created = api.post(f"{base}/multipart", json={"filename": "x.bin", "type": "", "metadata": {"size": 100}},
                       timeout=30).json()
    r = api.delete(f"{base}/multipart/{quote(created['uploadId'])}?key=x.bin", timeout=30)
    assert r.status_code == 200 and r.json() == {}
    after = state()
    assert after["s3_uploads"] == [] and after["objects"] == []


def test_uppy_without_size_is_told_how_to_fix_it(owner, draft, state):
    before = state()
    r = owner.api().post(f"{uppy_base(draft)}/multipart", json={"filename": "x.bin", "type": "a/b", "metadata": {}},
                         timeout=30)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "metadata.size"
    assert "setFileMeta" in r.json()["errors"][0]["message"]
    assert state() == before


def test_uppy_simple_upload_is_refused_with_advice(owner, draft, state):
    before = state()
    for query in ("filename=a.txt&type=text/plain", "filename=a.txt&metadata%5Bsize%5D=5"):
        r = owner.api().get(f"{uppy_base(draft)}/params?{query}", timeout=30)
        assert r.status_code == 400 and "shouldUseMultipart: true" in r.text
        assert r.json()["errors"][0]["field"] == "shouldUseMultipart"
    assert state() == before


def uppy_empty_post(session, params: dict, body: bytes = b"", name: str = "e.txt"):
    """What Uppy's postObject sends: the params' fields, then the file, as multipart/form-data."""
    return session.post(params["url"], data=params["fields"], files={"file": (name, body)}, timeout=30)


def test_uppy_empty_file_is_created_by_its_form_post(owner, draft, state, s3_client, s3_bucket):
    api = owner.api()
    query = urlencode({"filename": "empty é.txt", "type": "text/plain", "metadata[name]": "empty é.txt",
                       "metadata[size]": "0"})
    before = state()
    params = api.get(f"{uppy_base(draft)}/params?{query}", timeout=30)
    assert params.status_code == 200, params.text
    assert params.json() == {"method": "POST", "url": uppy_base(draft) + "/empty",
                             "fields": {"key": "empty é.txt", "Content-Type": "text/plain"}}
    assert state() == before  # answering params stores nothing: the POST does

    r = uppy_empty_post(api, params.json())
    assert r.status_code == 204, r.text
    assert r.headers["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    files = api.get(draft["links"]["files"], timeout=30).json()["entries"]
    assert [(f["key"], f["status"], f["size"], f["checksum"], f["mimetype"]) for f in files] == [
        ("empty é.txt", "completed", 0, "md5:d41d8cd98f00b204e9800998ecf8427e", "text/plain")]
    assert requests.get(r.headers["Location"], headers=api.headers, timeout=30).content == b""
    after = state()
    assert after["s3_uploads"] == [] and len(after["s3_objects"]) == 1  # one PutObject, no multipart upload
    assert uppy_empty_post(api, params.json()).status_code == 409  # the key exists now
    assert state() == after


def test_uppy_empty_route_refuses_bytes_and_changes_nothing(owner, draft, state):
    api = owner.api()
    params = {"url": uppy_base(draft) + "/empty", "fields": {"key": "e.txt"}}
    before = state()
    refusals = [
        uppy_empty_post(api, params, b"x"),  # not empty
        uppy_empty_post(api, params, b"x" * (70 * 1024)),  # a payload: not even parsed
        api.post(params["url"], data={"key": "e.txt"}, timeout=30),  # no file field
        uppy_empty_post(api, {**params, "fields": {"key": ""}}),
        uppy_empty_post(api, {**params, "fields": {"key": "e.txt", "Content-Type": "text/é"}}),
    ]
    assert [(r.status_code, r.json()["errors"][0]["field"]) for r in refusals] == [
        (400, "file"), (400, "file"), (400, "file"), (400, "key"), (400, "Content-Type")]
    assert "must be empty" in refusals[0].json()["errors"][0]["message"]
    assert state() == before


def test_uppy_parallel_client_asks_a_part_size_and_signs_digests_in_a_batch(owner, draft, state, s3_backend):
    """The demo page's additions: ``metadata.partSize`` and ``POST .../batch`` with each part's Content-MD5."""
    import base64
    import hashlib

    api = owner.api()
    base = uppy_base(draft)
    payload = random_bytes(13 * MiB + 7, seed=62)
    created = api.post(f"{base}/multipart", json={"filename": "parallel.bin", "type": "",
                                                  "metadata": {"size": len(payload), "partSize": 6 * MiB}},
                       timeout=30)
    assert created.status_code == 200, created.text
    upload_id, part_size = created.json()["uploadId"], created.json()["partSize"]
    assert part_size == 6 * MiB
    query = urlencode({"key": "parallel.bin"})
    chunks = [payload[o : o + part_size] for o in range(0, len(payload), part_size)]
    md5s = {str(n): base64.b64encode(hashlib.md5(c).digest()).decode() for n, c in enumerate(chunks, start=1)}
    signed = api.post(f"{base}/multipart/{quote(upload_id)}/batch?{query}",
                      json={"parts": [1, 2, 3], "content_md5": md5s}, timeout=30)
    assert signed.status_code == 200, signed.text
    answer = signed.json()
    assert set(answer["presignedUrls"]) == {"1", "2", "3"} and answer["expires"] > 0
    assert answer["headers"] == {n: {"Content-MD5": d} for n, d in md5s.items()}
    if s3_backend.name == "ceph":  # RGW checks the Content-MD5 (moto does not): other bytes of that length are refused
        other_bytes = bytes(b ^ 1 for b in chunks[0][:16]) + chunks[0][16:]
        refused = requests.put(answer["presignedUrls"]["1"], data=other_bytes, headers=answer["headers"]["1"],
                               timeout=60)
        assert refused.status_code == 400 and "<Code>BadDigest</Code>" in refused.text, refused.text
    parts = []
    for n, chunk in enumerate(chunks, start=1):
        put = requests.put(answer["presignedUrls"][str(n)], data=chunk, headers=answer["headers"][str(n)], timeout=60)
        assert put.status_code == 200, put.text
        parts.append({"PartNumber": n, "ETag": put.headers["ETag"].strip('"')})
    done = api.post(f"{base}/multipart/{quote(upload_id)}/complete?{query}", json={"parts": parts}, timeout=60)
    assert done.status_code == 200, done.text
    assert requests.get(done.json()["location"], headers=api.headers, timeout=60).content == payload

    # What the batch refuses: a repeated part, a digest of a part not being signed, a malformed one,
    # another upload's id; and a part size S3 would refuse.
    before = state()
    other = api.post(f"{base}/multipart", json={"filename": "p2.bin", "type": "", "metadata": {"size": 11 * MiB}},
                     timeout=30).json()
    batch = f"{base}/multipart/{quote(other['uploadId'])}/batch?key=p2.bin"
    refusals = [
        api.post(batch, json={"parts": [1, 1]}, timeout=30),
        api.post(batch, json={"parts": [1], "content_md5": {"2": md5s["1"]}}, timeout=30),
        api.post(batch, json={"parts": [1], "content_md5": {"1": "not base64"}}, timeout=30),
        api.post(f"{base}/multipart/{quote(upload_id)}/batch?key=p2.bin", json={"parts": [1]}, timeout=30),
        api.post(f"{base}/multipart", json={"filename": "p3.bin", "type": "",
                                            "metadata": {"size": 11 * MiB, "partSize": 1024}}, timeout=30),
        api.post(f"{base}/multipart", json={"filename": "p3.bin", "type": "",
                                            "metadata": {"size": 11 * MiB, "partSize": "six"}}, timeout=30),
    ]
    assert [r.status_code for r in refusals] == [400, 400, 400, 404, 400, 400], [r.text for r in refusals]
    assert other["partSize"] == 5 * MiB  # without partSize: stock Uppy's plan
    api.delete(f"{base}/multipart/{quote(other['uploadId'])}?key=p2.bin", timeout=30)
    assert state()["s3_uploads"] == before["s3_uploads"]
