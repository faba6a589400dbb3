"""S3 enforces the declared part sizes: every part URL signs its part's Content-Length (real Ceph RGW, real HTTP).

Whatever door signed the URL (the start's ``parts_url``, the sign API with
a Content-MD5, Uppy's per-part and batch routes), a body one byte longer,
one byte shorter or empty is refused by RGW's signature check and nothing
is stored; the exact part goes in, and the upload completes byte for byte.

Ceph only (conftest deselects ``test_ceph_*`` on other backends).
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote, urlencode

import pytest
import requests

from ..helpers import random_bytes
from .conftest import start_upload

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _ceph_only(s3_backend):
    assert s3_backend.name == "ceph", f"test_ceph_* ran on {s3_backend.name}"


def s3_code(response: requests.Response) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in response.text else ""


def refuses_other_lengths(url: str, part: bytes, headers: dict | None = None) -> None:
    for body in (part + b"x", part[:-1], b""):
        wrong = requests.put(url, data=body, headers=headers or {}, timeout=60)
        assert wrong.status_code == 403 and s3_code(wrong) == "SignatureDoesNotMatch", (len(body), wrong.text)


def listed_parts(api: requests.Session, files_url: str, key: str) -> list[int]:
    resumed = api.get(f"{files_url}{quote(key)}/multipart", timeout=30)
    assert resumed.status_code == 200, resumed.text
    return [p["PartNumber"] for p in resumed.json()["parts"]]


def test_rest_part_urls_accept_only_the_planned_length(owner, draft):
    api = owner.api()
    payload = random_bytes(5 * MiB + 1024, seed=71)
    part1, part2 = payload[: 5 * MiB], payload[5 * MiB :]
    created = start_upload(owner, draft, key="sized.bin", size=len(payload), part_size=5 * MiB)
    refuses_other_lengths(created["multipart_upload"]["parts_url"][0], part1)
    md5 = base64.b64encode(hashlib.md5(part2).digest()).decode()
    signed = api.post(created["links"]["sign"], json={"parts": [2], "content_md5": {"2": md5}}, timeout=30)
    assert signed.status_code == 200, signed.text
    part2_url, part2_headers = signed.json()["parts"][0]["url"], signed.json()["parts"][0]["headers"]
    refuses_other_lengths(part2_url, part2, part2_headers)
    assert listed_parts(api, draft["links"]["files"], "sized.bin") == []  # nothing refused was stored

    etags = [requests.put(created["multipart_upload"]["parts_url"][0], data=part1, timeout=60),
             requests.put(part2_url, data=part2, headers=part2_headers, timeout=60)]
    assert [r.status_code for r in etags] == [200, 200]
    done = api.post(created["links"]["complete"], timeout=60)
    assert done.status_code == 200, done.text
    assert requests.get(done.json()["links"]["content"], headers=api.headers, timeout=60).content == payload


def test_uppy_part_urls_accept_only_the_planned_length(owner, draft):
    api = owner.api()
    base = draft["links"]["uppy"] + "/s3"
    payload = random_bytes(5 * MiB + 77, seed=72)
    created = api.post(f"{base}/multipart", json={"filename": "uppy.bin", "type": "application/octet-stream",
                                                  "metadata": {"size": len(payload)}}, timeout=30)
    assert created.status_code == 200, created.text
    upload_id, query = quote(created.json()["uploadId"]), urlencode({"key": "uppy.bin"})
    batch = api.get(f"{base}/multipart/{upload_id}/batch?{query}&partNumbers=1", timeout=30).json()["presignedUrls"]
    single = api.get(f"{base}/multipart/{upload_id}/2?{query}", timeout=30).json()["url"]
    parts = {1: (batch["1"], payload[: 5 * MiB]), 2: (single, payload[5 * MiB :])}
    for url, part in parts.values():
        refuses_other_lengths(url, part)
    uploaded = []
    for number, (url, part) in parts.items():
        put = requests.put(url, data=part, timeout=60)
        assert put.status_code == 200, put.text
        uploaded.append({"PartNumber": number, "ETag": put.headers["ETag"]})
    done = api.post(f"{base}/multipart/{upload_id}/complete?{query}", json={"parts": uploaded}, timeout=60)
    assert done.status_code == 200, done.text
    assert requests.get(done.json()["location"], headers=api.headers, timeout=60).content == payload
