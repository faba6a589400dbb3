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


def test_uppy_simple_upload_is_refused_with_advice(owner, draft):
    r = owner.api().get(f"{uppy_base(draft)}/params?filename=a.txt&type=text/plain", timeout=30)
    assert r.status_code == 400 and "shouldUseMultipart: true" in r.text
