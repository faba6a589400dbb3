"""Bounded input everywhere: body size, JSON nesting and numbers, keys, over the REST, Uppy and seed endpoints.

Unit cases pin each bound (413 for a large body, with or without a
Content-Length; 400 for deep nesting, huge numbers, NaN, lone surrogates,
bad keys in URLs and bodies). Property tests then throw arbitrary Unicode
(lone surrogates, control and bidi characters), huge numbers and deep
nesting at every endpoint that takes a key or a body: never a 500, always
the JSON error shape, and a refused request changes nothing, in the
database or in S3.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import start_upload

# Parsing, hosts and budgets do not depend on the S3 implementation: the moto lanes (SQLite,
# PostgreSQL) cover them; the Ceph lane's time goes to what only a real S3 shows.
pytestmark = pytest.mark.s3_backends("moto")


MiB = 1024 * 1024
LIMIT = 2 * MiB


def assert_json_error(response: requests.Response, status: int, field: str | None = None, text: str | None = None):
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:500]
    body = response.json()
    assert body["status"] == status and body["message"]
    if field is not None:  # the field, or a place inside it (``size[0][0]...``)
        fields = [e["field"] for e in body.get("errors", [])]
        assert any(f == field or f.startswith((f"{field}[", f"{field}.")) for f in fields), body
    if text is not None:
        assert text in response.text, body


def raw_post(api: requests.Session, url: str, data, **headers) -> requests.Response:
    return api.post(url, data=data, headers={"Content-Type": "application/json", **headers}, timeout=60)


@pytest.fixture()
def pending(owner, draft):
    """A pending upload of the draft (for the endpoints that need one)."""
    return start_upload(owner, draft, key="pending.bin", size=10)


def json_endpoints(draft, pending, api_url):
    """Every endpoint taking a JSON body: (name, url)."""
    base = draft["links"]["uppy"] + "/s3/multipart"
    upload_id = quote(pending["multipart_upload"]["upload_id"], safe="")
    seed = api_url.replace("/draft/records", "/my/records") + f"/{draft['id']}/files/pending.bin/complete-multipart"
    return [
        ("create draft", f"{api_url}/"),
        ("init", f"{draft['links']['files']}?multipart=True"),
        ("sign", pending["links"]["sign"]),
        ("complete", pending["links"]["complete"]),
        ("uppy create", base),
        ("uppy complete", f"{base}/{upload_id}/complete?key=pending.bin"),
        ("seed complete", seed),
    ]


def test_a_body_over_the_limit_is_413_with_or_without_a_content_length(owner, draft, pending, api_url, state):
    api = owner.api()
    big = b'{"metadata": {"x": "' + b"y" * LIMIT + b'"}}'
    before = state()
    for _, url in json_endpoints(draft, pending, api_url):
        assert_json_error(raw_post(api, url, big), 413, "body", f"at most {LIMIT} bytes")
        chunked = raw_post(api, url, (big[i : i + 65536] for i in range(0, len(big), 65536)))  # no Content-Length
        assert_json_error(chunked, 413, "body", f"at most {LIMIT} bytes")
    assert state() == before


def test_the_uppy_empty_file_form_keeps_its_own_smaller_limit(owner, draft, state):
    before = state()
    url = draft["links"]["uppy"] + "/s3/empty"
    r = owner.api().post(url, files={"file": ("e.bin", b"")}, data={"key": "e.bin", "pad": "x" * (LIMIT + 10)},
                         timeout=60)
    assert r.status_code in (400, 413), r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert state() == before


@pytest.mark.parametrize(
    "raw, field, text",
    [
        ("[" * 50_000 + "]" * 50_000, "body", "deeper than 32 levels"),
        ('{"key": "a.bin", "size": ' + "[" * 40 + "]" * 40 + "}", "size", "deeper than 32 levels"),
        ('{"key": "a.bin", "size": 100000000000000000000000000000}', "size", "at most 9223372036854775807"),
        ('{"key": "a.bin", "size": ' + "9" * 5000 + "}", "body", "valid JSON"),
        ('{"key": "a.bin", "size": 1e400}', "size", "finite"),
        ('{"key": "a.bin", "size": NaN}', "body", "valid JSON"),
        ('{"key": "\\ud800.bin", "size": 10}', "key", "no lone surrogates"),
        ('{"key": "a.bin", "size": 10, "\\udfff": 1}', "\\udfff", "no lone surrogates"),
        ('{"key": "a.bin", "size": 10', "body", "valid JSON"),
        (b'{"key": "\xff.bin", "size": 10}', "body", "valid JSON"),
    ],
)
def test_json_out_of_bounds_is_400_naming_where(owner, draft, state, raw, field, text):
    before = state()
    r = raw_post(owner.api(), f"{draft['links']['files']}?multipart=True", raw)
    assert_json_error(r, 400, field, text)
    assert state() == before


def test_draft_metadata_cannot_nest_deeper_than_the_bound(owner, api_url, state):
    metadata: dict = {}
    inner = metadata
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]
    before = state()
    r = owner.api().post(f"{api_url}/", json={"metadata": metadata}, timeout=30)
    assert_json_error(r, 400, text="deeper than 32 levels")
    assert state() == before


@pytest.mark.parametrize("key, rule", [
    ("a%00b", "U+0000"), ("line%0Abreak", "U+000A"), ("bell%07", "U+0007"), ("evil%E2%80%AEtxt.exe", "U+202E"),
    ("x" * 256, "at most 255 characters"), ("a%5Cb", "backslash"),
])
@pytest.mark.parametrize("suffix, method", [("", "GET"), ("", "DELETE"), ("/content", "GET"), ("/multipart", "GET"),
                                            ("/multipart/sign", "POST"), ("/complete-multipart", "POST"),
                                            ("/abort-multipart", "POST")])
def test_keys_in_urls_are_checked_before_anything_uses_them(owner, draft, state, key, rule, suffix, method):
    """A bad key is named before the body is parsed or the database asked (PostgreSQL refuses NUL: was a 500)."""
    before = state()
    r = owner.api().request(method, f"{draft['links']['files']}{key}{suffix}", json={"parts": "not even a list"},
                            timeout=30)
    assert_json_error(r, 400, "key", rule)
    assert state() == before


@pytest.mark.parametrize("path, status", [
    ("files/%ED%A0%80", 404),  # invalid UTF-8 decodes to U+FFFD: a valid name that no file has
    ("files/", 405),  # DELETE of the file list
    ("nowhere", 404), ("files/x/unknown-action/more", 404), ("bad%0Apid/files/x", 404),
])
def test_unrouted_paths_of_the_api_answer_json(owner, draft, state, path, status):
    before = state()
    r = owner.api().delete(f"{draft['links']['self']}/{path}", timeout=30)
    assert_json_error(r, status)
    if status == 405:
        assert set(r.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert state() == before


# --- properties ------------------------------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40) | st.sampled_from(
    ["a\u202eb.exe", "\u200b", "a\u2028b", "\ud800", "x/content", "../x", "a\\b", "", " ", "a" * 300])
HUGE = st.integers(min_value=-(2**200), max_value=2**200)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | HUGE | st.floats(allow_nan=False) | ANY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(ANY_TEXT, children, max_size=3),
    max_leaves=12,
)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


def body_text(value) -> bytes:
    """JSON with every non-ASCII character escaped: lone surrogates travel as ``\\udXXX``."""
    return json.dumps(value, ensure_ascii=True).encode()


def never_a_500(response: requests.Response, before, after) -> None:
    assert response.status_code < 500, response.text[:800]
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/json"), (
            response.request.method, response.url, response.text[:300])
        assert after == before, response.text[:300]


@PROPERTY
@given(key=ANY_TEXT, size=HUGE | ANY_JSON, part_size=HUGE | ANY_JSON)
def test_init_never_fails_with_a_500(owner, draft, state, key, size, part_size):
    before = state()
    body = body_text({"key": key, "size": size, "part_size": part_size})
    r = raw_post(owner.api(), f"{draft['links']['files']}?multipart=True", body)
    never_a_500(r, before, state() if r.status_code >= 400 else before)


@PROPERTY
@given(key=ANY_TEXT, method=st.sampled_from(["GET", "DELETE", "POST"]), suffix=st.sampled_from(
    ["", "/content", "/multipart", "/multipart/sign", "/complete-multipart", "/abort-multipart"]))
def test_any_key_in_a_url_never_fails_with_a_500(owner, draft, state, key, method, suffix):
    if method == "POST" and suffix in ("", "/content", "/multipart"):
        suffix = "/complete-multipart"
    before = state()
    url = f"{draft['links']['files']}{quote(key.encode('utf-8', 'surrogatepass'), safe='/')}{suffix}"
    r = owner.api().request(method, url, json={"parts": [1]}, timeout=30)
    never_a_500(r, before, state() if r.status_code >= 400 else before)


@PROPERTY
@given(filename=ANY_TEXT, size=HUGE | ANY_JSON, kind=ANY_JSON, query_key=ANY_TEXT, numbers=ANY_TEXT)
def test_uppy_routes_never_fail_with_a_500(owner, draft, pending, state, filename, size, kind, query_key, numbers):
    api, base = owner.api(), draft["links"]["uppy"] + "/s3"
    upload_id = quote(pending["multipart_upload"]["upload_id"], safe="")
    query = "key=" + quote(query_key.encode("utf-8", "surrogatepass"), safe="")
    before = state()
    body = body_text({"filename": filename, "type": kind, "metadata": {"size": size}})
    created = raw_post(api, f"{base}/multipart", body)
    never_a_500(created, before, state() if created.status_code >= 400 else before)
    before = state()
    for r in (api.get(f"{base}/multipart/{upload_id}?{query}", timeout=30),
              api.get(f"{base}/multipart/{upload_id}/batch?{query}&partNumbers="
                      f"{quote(numbers.encode('utf-8', 'surrogatepass'), safe='')}", timeout=30),
              api.get(f"{base}/params?filename={quote(filename.encode('utf-8', 'surrogatepass'), safe='')}"
                      f"&metadata[size]=0", timeout=30)):
        never_a_500(r, before, state())


@PROPERTY
@given(parts=ANY_JSON)
def test_seed_completion_never_fails_with_a_500(owner, draft, pending, api_url, state, parts):
    seed = api_url.replace("/draft/records", "/my/records") + f"/{draft['id']}/files/pending.bin/complete-multipart"
    before = state()
    r = raw_post(owner.api(), seed, body_text({"parts": parts}))
    never_a_500(r, before, state() if r.status_code >= 400 else before)
