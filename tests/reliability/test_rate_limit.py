"""Signing is rate-limited per user (OAREPO_S3_SIGN_RATE_LIMIT): 429 naming the limit, Retry-After, nothing changed."""

from __future__ import annotations

import pytest
import requests

from ..helpers import put_parts
from ..rest.conftest import start_upload


@pytest.fixture()
def limit(app):
    """Set the signing limit for one test, with fresh counts; restore afterwards."""
    limiter = app.extensions["oarepo-s3"].sign_limiter
    old = app.config["OAREPO_S3_SIGN_RATE_LIMIT"]

    def set_limit(value):
        app.config["OAREPO_S3_SIGN_RATE_LIMIT"] = value
        limiter.reset()

    yield set_limit
    app.config["OAREPO_S3_SIGN_RATE_LIMIT"] = old
    limiter.reset()


def signing_calls(upload: dict, draft: dict) -> list[tuple[str, str, dict | None]]:
    """One request of each kind that signs part URLs, for an upload in progress."""
    uppy = f"{draft['links']['uppy']}/s3/multipart/{upload['multipart_upload']['upload_id']}"
    key = upload["key"]
    return [
        ("POST", upload["links"]["sign"], {"parts": [1]}),
        ("GET", f"{uppy}/batch?key={key}&partNumbers=1", None),
        ("GET", f"{uppy}/1?key={key}", None),
    ]


def test_every_signing_endpoint_counts_and_the_excess_is_429(limit, owner, users, draft, state):
    limit("4/minute")
    upload = start_upload(owner, draft, key="a.bin", size=10)  # 1: starting signs every part
    api = owner.api()
    for method, url, body in signing_calls(upload, draft):  # 2..4
        assert api.request(method, url, json=body, timeout=30).status_code == 200, url
    before = state()
    refused = [("POST", f"{draft['links']['files']}?multipart=True", {"key": "b.bin", "size": 10})]
    for method, url, body in refused + signing_calls(upload, draft):
        r = api.request(method, url, json=body, timeout=30)
        assert r.status_code == 429, (url, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert "4 per 1 minute" in r.json()["message"]
        assert r.json()["errors"] == [{"field": "rate_limit", "message": "4 per 1 minute"}]
    assert state() == before
    # Other endpoints are not limited, and the upload can still be finished with the URLs it has.
    assert api.get(draft["links"]["files"], timeout=30).status_code == 200
    parts = put_parts(upload["multipart_upload"], b"0123456789")
    assert api.post(upload["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
    # The budget is per user: the administrator still signs.
    assert users["admin"].api().post(
        f"{draft['links']['files']}?multipart=True", json={"key": "c.bin", "size": 1}, timeout=30
    ).status_code == 201


def test_anonymous_and_other_users_get_their_401_403_not_429(limit, owner, users, draft):
    limit("1/minute")
    upload = start_upload(owner, draft, key="a.bin", size=10)
    for method, url, body in signing_calls(upload, draft):
        assert requests.request(method, url, json=body, timeout=30).status_code == 401
    other = users["other"].api()
    statuses = [other.request(m, u, json=b, timeout=30).status_code for m, u, b in signing_calls(upload, draft)]
    assert statuses == [403, 429, 429]  # counted like any signing request of that user, then refused


@pytest.mark.parametrize("off", [None, ""])
def test_no_limit_when_unset(limit, owner, draft, off):
    limit(off)
    upload = start_upload(owner, draft, key="a.bin", size=10)
    api = owner.api()
    for _ in range(30):
        assert api.post(upload["links"]["sign"], json={"parts": [1]}, timeout=30).status_code == 200
