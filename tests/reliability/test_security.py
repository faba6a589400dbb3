"""Security properties over real HTTP.

Keys stay inside the record, CORS answers as configured, nothing secret is logged.
"""

from __future__ import annotations

import logging
import re
import uuid
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from invenio_db import db

from oarepo_s3.cli import oarepo_s3 as oarepo_s3_cli

from ..helpers import put_parts
from ..rest.conftest import start_upload
from .books import books_problems, s3_view

# --- keys cannot escape the record ---------------------------------------------------

TRAVERSALS = [
    "../x.bin", "../../etc/passwd", "a/../../x.bin", "a/./b.bin", "/abs.bin", "//host/x.bin", "a\\..\\b.bin",
    "..", ".", "a/..", "./x.bin", "x.bin/..",
]
"""Keys that would leave the record's folder (or name it) if they were paths: refused (400, field ``key``)."""

ENCODED = ["%2e%2e/x.bin", "..%2fx.bin", "%2E%2E%2Fx.bin", "%252e%252e%252fx.bin", "\u2024\u2024/x.bin"]
"""Percent-encoded and look-alike spellings: names like any other (never decoded), stored inside the record."""


@pytest.mark.parametrize("key", TRAVERSALS)
def test_traversal_keys_are_refused_everywhere(owner, draft, state, key):
    before = state()
    api = owner.api()
    json_start = api.post(f"{draft['links']['files']}?multipart=True", json={"key": key, "size": 10}, timeout=30)
    form_start = api.post(f"{draft['links']['files']}?multipart=True", data={"key": key, "size": "10"}, timeout=30)
    uppy_start = api.post(draft["links"]["uppy"] + "/s3/multipart",
                          json={"filename": key, "type": "x/y", "metadata": {"size": 10}}, timeout=30)
    for r in (json_start, form_start, uppy_start):
        assert r.status_code == 400, (key, r.status_code, r.text)
        assert [e["field"] for e in r.json()["errors"]] == ["key"], r.text
    assert state() == before


@pytest.mark.parametrize("key", ENCODED)
def test_encoded_keys_are_plain_names_inside_the_record(owner, draft, s3_client, s3_bucket, key):
    """The S3 key is files-rest's ``ab/cd/<uuid>/data``: nothing of the user's key reaches S3."""
    upload = start_upload(owner, draft, key=key, size=3)
    assert upload["key"] == key
    s3_key = upload["multipart_upload"]["key"]
    assert re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f-]{32}/data", s3_key), s3_key
    parts = put_parts(upload["multipart_upload"], b"abc")
    assert owner.api().post(upload["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
    assert list(s3_view(s3_client, s3_bucket)[0]) == [s3_key]
    # Reachable under its own name only; its URL-decoded twin is another (missing) file.
    api = owner.api()
    assert api.get(upload["links"]["self"] + "/content", allow_redirects=False, timeout=30).status_code == 302
    assert books_problems() == []


@pytest.mark.parametrize("path, status", [
    ("..%2F..%2Fother/files/done.bin", 400),  # the key breaks the key rule: refused before it is looked up
    ("%2e%2e/%2e%2e/done.bin", 400),
    ("a/../done.bin", 404),  # the client itself resolves the dot segments: done.bin, which this draft lacks
])
def test_traversal_in_urls_reaches_nothing_else(owner, draft, api_url, path, status):
    """A file URL whose key climbs out of the draft names no file of any record."""
    upload = start_upload(owner, draft, key="done.bin", size=3)
    put_parts(upload["multipart_upload"], b"abc")
    assert owner.api().post(upload["links"]["complete"], json={}, timeout=30).status_code == 200
    other = owner.api().post(f"{api_url}/", json={}, timeout=30).json()
    r = owner.api().get(f"{other['links']['files']}{path}/content", allow_redirects=False, timeout=30)
    assert r.status_code == status and "Location" not in r.headers, (path, r.status_code, r.text)
    if status == 400:
        assert [e["field"] for e in r.json()["errors"]] == ["key"] and "'..' segments" in r.text


# --- CORS --------------------------------------------------------------------------------


def test_cors_as_configured_answers_browser_preflights(app, s3_client, s3_bucket, owner, draft):
    """``invenio oarepo-s3 cors BUCKET --origin SITE``: S3 answers SITE's preflight for a part PUT, exposes ETag."""
    site, elsewhere = "https://repo.example.org", "https://evil.example"
    result = app.test_cli_runner().invoke(oarepo_s3_cli, ["cors", s3_bucket, "--origin", site, "--max-age", "600"])
    assert result.exit_code == 0, result.output
    upload = start_upload(owner, draft, key="cors.bin", size=3)
    url = upload["multipart_upload"]["parts_url"][0]
    preflight = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type"}
    allowed = requests.options(url, headers={"Origin": site, **preflight}, timeout=30)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["Access-Control-Allow-Origin"] == site
    assert "PUT" in allowed.headers["Access-Control-Allow-Methods"]
    refused = requests.options(url, headers={"Origin": elsewhere, **preflight}, timeout=30)
    assert "Access-Control-Allow-Origin" not in refused.headers or refused.status_code == 403
    put = requests.put(url, data=b"abc", headers={"Origin": site}, timeout=30)
    assert put.status_code == 200
    assert put.headers["Access-Control-Allow-Origin"] == site
    assert "etag" in put.headers["Access-Control-Expose-Headers"].lower()


# --- nothing secret in the logs ------------------------------------------------------------


@pytest.fixture()
def distinct_s3_secret(app, s3_backend, monkeypatch):
    """moto takes any credentials and the suite's are 'testing' (also the access key).

    Use a secret one can search for instead.
    """
    if s3_backend.name != "moto":  # Ceph's keys are random already
        yield
        return
    state = app.extensions["oarepo-s3"]
    monkeypatch.setitem(app.config, "S3_SECRET_ACCESS_KEY", f"secret-{uuid.uuid4().hex}")
    for cached in ("s3", "presigner"):
        monkeypatch.delitem(state.__dict__, cached, raising=False)
    yield
    for cached in ("s3", "presigner"):
        state.__dict__.pop(cached, None)


def test_no_token_secret_or_signature_is_logged(caplog, owner, draft, app, distinct_s3_secret):
    """A whole upload (start, re-sign, complete, download redirect) with every logger at DEBUG.

    Dependencies do log credentials at DEBUG (flask-oauthlib the bearer token,
    botocore each control call's signature): oarepo-s3 redacts those loggers.
    Only the server's records count: the test's own HTTP client (urllib3 in
    the main thread) and moto's access log (moto runs in this process) log
    the presigned URLs they were given, as any client and S3 may.
    """
    names = ("botocore", "urllib3", "oarepo_s3", "werkzeug", "flask", "flask_oauthlib", "invenio", "s3fs")
    with caplog.at_level(logging.DEBUG):
        for name in names:
            logging.getLogger(name).setLevel(logging.DEBUG)
        try:
            upload = start_upload(owner, draft, key="secret.bin", size=3)
            api = owner.api()
            signed = api.post(upload["links"]["sign"], json={"parts": [1]}, timeout=30).json()["parts"][0]["url"]
            assert requests.put(signed, data=b"abc", timeout=30).status_code == 200
            assert api.post(upload["links"]["complete"], json={}, timeout=30).status_code == 200
            download = api.get(upload["links"]["self"] + "/content", allow_redirects=False, timeout=30)
            assert download.status_code == 302
            assert api.delete(upload["links"]["self"], timeout=30).status_code == 204
        finally:
            for name in names:
                logging.getLogger(name).setLevel(logging.NOTSET)
    urls = upload["multipart_upload"]["parts_url"] + [signed, download.headers["Location"]]
    signatures = {parse_qs(urlsplit(u).query)["X-Amz-Signature"][0] for u in urls}
    secrets = {"owner token": owner.token, "S3 secret key": app.config["S3_SECRET_ACCESS_KEY"],
               "app SECRET_KEY": app.config["SECRET_KEY"]}
    secrets.update({f"URL signature {s[:8]}...": s for s in signatures})
    moto_log = re.compile(r'"[A-Z]+ /test-[0-9a-f]{16}[/?]')
    ours = [r for r in caplog.records
            if r.threadName != "MainThread" and not (r.name == "werkzeug" and moto_log.search(r.getMessage()))]
    assert {"botocore.endpoint", "flask_oauthlib", "werkzeug"} <= {r.name for r in ours}  # they were heard
    text = "\n".join(f"{r.name}: {r.getMessage()}" for r in ours)
    leaks = [what for what, value in secrets.items() if value in text or quote(value, safe="") in text]
    signatures_logged = re.findall(r"Signature[=:]\s*([0-9a-f]{64})", text)
    assert leaks == [] and signatures_logged == [], (leaks, signatures_logged[:3])
    assert "[redacted]" in text  # the redaction, not silence, is why
    db.session.commit()
