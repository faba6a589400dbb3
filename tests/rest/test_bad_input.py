"""Every bad request: a JSON 4xx naming the field and the rule, and nothing changed anywhere."""

from __future__ import annotations

import pytest
import requests

from ..helpers import put_parts, random_bytes
from .conftest import start_upload

MiB = 1024 * 1024
TiB = 1024**4


def assert_error(response, status, field=None, text=None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status
    if field is not None:
        fields = [e["field"] for e in body.get("errors", [])]
        assert field in fields, body
    if text is not None:
        assert text in response.text, body


PART_NUMBER_RANGE = "greater than or equal to 1 and less than or equal to 10000"


@pytest.mark.parametrize(
    "body, field, text",
    [
        ({"size": 10}, "key", "Missing data"),
        ({"key": "a.bin"}, "size", "Missing data"),
        ({"key": "a.bin", "size": 10, "color": "red"}, "color", "Unknown field"),
        ({"key": "a.bin", "size": "10"}, "size", "Not a valid integer"),
        ({"key": "a.bin", "size": 10.5}, "size", "Not a valid integer"),
        ({"key": "a.bin", "size": -1}, "size", "0 or more bytes"),
        ({"key": "a.bin", "size": 6 * TiB}, "size", "at most"),
        ({"key": "a.bin", "size": 10, "part_size": 1}, "part_size", "between"),
        ({"key": 5, "size": 10}, "key", "Not a valid string"),
        ({"key": "", "size": 10}, "key", "non-empty"),
        ({"key": "../etc/passwd", "size": 10}, "key", "'..' segments"),
        ({"key": "../etc/passwd", "size": 0}, "key", "'..' segments"),  # empty files follow the same rules
        ({"key": "a/./b", "size": 10}, "key", "'.' or '..'"),
        ({"key": "/abs", "size": 10}, "key", "start or end with '/'"),
        ({"key": "dir/", "size": 10}, "key", "start or end with '/'"),
        ({"key": "a//b", "size": 10}, "key", "empty"),
        ({"key": "back\\\\slash", "size": 10}, "key", "backslash"),
        ({"key": "bell\\u0007", "size": 10}, "key", "control, format or separator characters (U+0007)"),
        ({"key": "x" * 256, "size": 10}, "key", "at most 255 characters"),
        ({"key": "\\ud800.bin", "size": 10}, "key", "no lone surrogates"),
        ({"key": "dir/content", "size": 10}, "key", "reserved"),
        ([1, 2], "body", "Invalid input type"),
    ],
)
def test_bad_start(owner, draft, state, body, field, text):
    if isinstance(body, dict) and isinstance(body.get("key"), str):
        key = body["key"]
        body["key"] = key.encode().decode("unicode_escape") if "\\u" in key else key.replace("\\\\", "\\")
    before = state()
    r = owner.api().post(f"{draft['links']['files']}?multipart=True", json=body, timeout=30)
    assert_error(r, 400, field, text)
    assert state() == before


def test_malformed_json(owner, draft, state):
    before = state()
    r = owner.api().post(f"{draft['links']['files']}?multipart=True", data=b'{"key": "a",',
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert_error(r, 400, "body", "valid JSON")
    r = owner.api().post(draft["links"]["files"] + "?multipart=True", data=b"key=a",
                         headers={"Content-Type": "text/plain"}, timeout=30)
    assert_error(r, 400, "Content-Type")
    assert state() == before


def test_start_without_multipart_flag(owner, draft, state):
    before = state()
    r = owner.api().post(draft["links"]["files"], json={"key": "a", "size": 1}, timeout=30)
    assert_error(r, 400, "multipart", "?multipart=True")
    assert state() == before


def test_existing_key_is_409(owner, draft, state):
    start_upload(owner, draft, key="twice.bin")
    before = state()
    r = owner.api().post(f"{draft['links']['files']}?multipart=True", json={"key": "twice.bin", "size": 5}, timeout=30)
    assert_error(r, 409, "key", "already exists")
    assert state() == before


def test_unknown_pid_key_and_route(owner, draft, api_url, state):
    before = state()
    api = owner.api()
    assert_error(api.get(f"{api_url}/nope-12345", timeout=30), 404, text="not found")
    assert_error(api.get(f"{draft['links']['files']}missing.bin", timeout=30), 404, text="missing.bin")
    assert_error(api.post(f"{draft['links']['files']}missing.bin/complete-multipart", json={}, timeout=30), 404)
    assert state() == before


@pytest.mark.parametrize(
    "body, field, text",
    [
        ({"parts": [0]}, "parts[0]", "greater than or equal to 1 and less than or equal to 10000"),
        ({"parts": [10001]}, "parts[0]", "greater than or equal to 1 and less than or equal to 10000"),
        ({"parts": [1, 1]}, "parts", "must not repeat"),
        ({"parts": ["1"]}, "parts[0]", "Not a valid integer"),
        ({"parts": [1.5]}, "parts[0]", "Not a valid integer"),
        ({"parts": []}, "parts", "Length must be between 1 and 10000"),
        ({}, "parts", "Missing data"),
        ({"parts": [3]}, "parts", "from 1 to 2"),
    ],
)
def test_bad_sign(owner, draft, state, body, field, text):
    created = start_upload(owner, draft, size=6 * MiB, part_size=5 * MiB)
    before = state()
    r = owner.api().post(created["links"]["sign"], json=body, timeout=30)
    assert_error(r, 400, field, text)
    assert state() == before


@pytest.fixture()
def two_parts(owner, draft):
    payload = random_bytes(6 * MiB, seed=51)
    created = start_upload(owner, draft, key="two.bin", size=len(payload), part_size=5 * MiB)
    parts = put_parts(created["multipart_upload"], payload)
    return created, parts, payload


@pytest.mark.parametrize(
    "mutate, status, field, text",
    [
        (lambda p: [p[0]], 400, "parts", "missing 2"),
        (lambda p: [p[0], p[0]], 400, "parts[1].PartNumber", "listed twice"),
        (lambda p: [{**p[0], "PartNum": 0}, p[1]], 400, "parts[0].PartNum", PART_NUMBER_RANGE),
        (lambda p: [{**p[0], "PartNum": 10001}, p[1]], 400, "parts[0].PartNum", PART_NUMBER_RANGE),
        (lambda p: [{**p[0], "PartNum": "one"}, p[1]], 400, "parts[0].PartNum", "Not a valid integer"),
        (lambda p: [{"ETag": p[0]["ETag"]}, p[1]], 400, "parts[0].PartNumber", "exactly one"),
        (lambda p: [{**p[0], "PartNumber": 1}, p[1]], 400, "parts[0].PartNumber", "exactly one"),
        (lambda p: [{**p[0], "ETag": '"deadbeef"'}, p[1]], 400, "parts[0].ETag", "differs from S3"),
        (lambda p: [p[0], {**p[1], "PartNum": 3}], 400, "parts[1].PartNumber", "from 1 to 2"),
        (lambda p: "all", 400, "parts", "Not a valid list"),
    ],
)
def test_bad_complete(owner, two_parts, state, mutate, status, field, text):
    created, parts, _ = two_parts
    before = state()
    r = owner.api().post(created["links"]["complete"], json={"parts": mutate(parts)}, timeout=30)
    assert_error(r, status, field, text)
    assert state() == before
    # Still resumable: the right parts complete it.
    assert owner.api().post(created["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200


def test_missing_part_in_s3_and_size_mismatch(owner, draft, state, s3_backend):
    payload = random_bytes(6 * MiB, seed=52)
    created = start_upload(owner, draft, key="short.bin", size=len(payload), part_size=5 * MiB)
    put_parts(created["multipart_upload"], payload, numbers={1})
    before = state()
    complete = created["links"]["complete"]
    assert_error(owner.api().post(complete, json={}, timeout=30), 400, "parts", "parts 2 are not in S3")
    tail_url = created["multipart_upload"]["parts_url"][1]
    short = requests.put(tail_url, data=payload[5 * MiB : -10], timeout=60)  # the tail, 10 bytes short
    if s3_backend.name == "ceph":  # the part's Content-Length is signed into its URL: S3 refuses the body
        assert short.status_code == 403 and "SignatureDoesNotMatch" in short.text, short.text
        assert_error(owner.api().post(complete, json={}, timeout=30), 400, "parts", "parts 2 are not in S3")
    else:  # moto checks no signature: the completion's size check names the part
        assert short.status_code == 200
        assert_error(owner.api().post(complete, json={}, timeout=30), 400, "parts[2]",
                     f"part 2 has {MiB - 10} bytes in S3, expected {MiB}")
    assert state()["sessions"] == before["sessions"] and state()["files"] == before["files"]


def test_complete_after_abort_and_abort_after_complete(owner, draft, two_parts, state):
    created, parts, _ = two_parts
    assert owner.api().post(created["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
    before = state()
    assert_error(owner.api().post(created["links"]["abort"], timeout=30), 404, text="No multipart upload in progress")
    assert state() == before

    other = start_upload(owner, draft, key="gone.bin")
    assert owner.api().post(other["links"]["abort"], timeout=30).status_code == 204
    before = state()
    assert_error(owner.api().post(other["links"]["complete"], json={}, timeout=30), 404)
    assert state() == before


def test_another_drafts_upload_id(owner, draft, api_url, state):
    mine = start_upload(owner, draft, key="mine.bin")
    second = owner.api().post(f"{api_url}/", json={}, timeout=30).json()
    theirs = start_upload(owner, second, key="mine.bin")
    before = state()
    uppy = draft["links"]["uppy"] + "/s3/multipart"
    foreign = theirs["multipart_upload"]["upload_id"]
    r = owner.api().get(f"{uppy}/{foreign}/1?key=mine.bin", timeout=30)
    assert_error(r, 404, text="not the upload")
    r = owner.api().delete(f"{uppy}/{foreign}?key=mine.bin", timeout=30)
    assert_error(r, 404)
    r = owner.api().get(f"{uppy}/{mine['multipart_upload']['upload_id']}/1", timeout=30)
    assert_error(r, 400, "key", "required")
    assert state() == before


def test_s3_down_is_503_and_changes_nothing(owner, draft, state, app, monkeypatch):
    from oarepo_s3.s3 import S3Client

    created = start_upload(owner, draft, key="d.bin", size=10)
    before = state()
    with app.app_context():
        from oarepo_s3.proxies import current_oarepo_s3

        s3_state = current_oarepo_s3._get_current_object()
        _ = s3_state.presigner  # built from the real endpoint first (a cached property)
        config = {**app.config, "S3_ENDPOINT_URL": "http://127.0.0.1:9", "OAREPO_S3_MAX_ATTEMPTS": 1}
        monkeypatch.setitem(s3_state.__dict__, "s3", S3Client.from_config(config))
    api = owner.api()
    for method, url, body in [
        ("POST", f"{draft['links']['files']}?multipart=True", {"key": "new.bin", "size": 5}),
        ("GET", created["links"]["multipart"], None),
        ("POST", created["links"]["complete"], {}),
        ("POST", created["links"]["abort"], None),
        ("DELETE", created["links"]["self"], None),
    ]:
        r = api.request(method, url, json=body, timeout=30)
        assert_error(r, 503, text="127.0.0.1:9")
        assert r.headers["Retry-After"] == "5"
    monkeypatch.undo()
    assert state() == before
