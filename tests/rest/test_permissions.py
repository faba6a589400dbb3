"""Who may do what, on every endpoint: anonymous 401, another user 403, owner and admin allowed."""

from __future__ import annotations

import pytest
import requests

from ..helpers import put_parts
from .conftest import start_upload


@pytest.fixture()
def scene(owner, draft):
    """A draft with a pending and a completed file."""
    pending = start_upload(owner, draft, key="pending.bin", size=100)
    done = start_upload(owner, draft, key="done.bin", size=3)
    parts = put_parts(done["multipart_upload"], b"abc")
    assert owner.api().post(done["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
    uppy = draft["links"]["uppy"] + "/s3/multipart"
    upload_id = pending["multipart_upload"]["upload_id"]
    return {
        "draft": draft,
        "calls": [
            ("GET", draft["links"]["self"], None),
            ("POST", draft["links"]["publish"], None),
            ("GET", draft["links"]["files"], None),
            ("POST", draft["links"]["files"] + "?multipart=True", {"key": "new.bin", "size": 10}),
            ("GET", pending["links"]["self"], None),
            ("DELETE", pending["links"]["self"], None),
            ("GET", pending["links"]["multipart"], None),
            ("POST", pending["links"]["sign"], {"parts": [1]}),
            ("POST", pending["links"]["complete"], {}),
            ("POST", pending["links"]["abort"], None),
            ("GET", done["links"]["self"] + "/content", None),
            ("DELETE", done["links"]["self"], None),
            ("POST", uppy, {"filename": "u.bin", "type": "x/y", "metadata": {"size": 5}}),
            ("GET", f"{uppy}/{upload_id}?key=pending.bin", None),
            ("GET", f"{uppy}/{upload_id}/1?key=pending.bin", None),
            ("GET", f"{uppy}/{upload_id}/batch?key=pending.bin&partNumbers=1", None),
            ("POST", f"{uppy}/{upload_id}/complete?key=pending.bin", {"parts": []}),
            ("DELETE", f"{uppy}/{upload_id}?key=pending.bin", None),
        ],
    }


def call(session, method, url, body):
    return session.request(method, url, json=body, allow_redirects=False, timeout=30)


def test_anonymous_gets_401_and_changes_nothing(scene, state):
    before = state()
    for method, url, body in scene["calls"]:
        r = call(requests.Session(), method, url, body)
        assert r.status_code == 401, (method, url, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json" and r.json()["status"] == 401
    assert state() == before


def test_a_bad_token_is_not_a_user(scene, state):
    before = state()
    session = requests.Session()
    session.headers["Authorization"] = "Bearer not-a-token"
    for method, url, body in scene["calls"]:
        assert call(session, method, url, body).status_code == 401, (method, url)
    assert state() == before


def test_other_user_gets_403_and_changes_nothing(scene, users, state):
    before = state()
    other = users["other"].api()
    for method, url, body in scene["calls"]:
        r = call(other, method, url, body)
        assert r.status_code == 403, (method, url, r.status_code, r.text)
        assert "owner" in r.json()["message"]
    assert state() == before


def test_admin_may_do_everything_in_someone_elses_draft(scene, users):
    admin = users["admin"].api()
    draft = scene["draft"]
    assert admin.get(draft["links"]["self"], timeout=30).status_code == 200
    listing = admin.get(draft["links"]["files"], timeout=30).json()["entries"]
    assert {f["key"] for f in listing} == {"pending.bin", "done.bin"}
    created = admin.post(draft["links"]["files"] + "?multipart=True", json={"key": "adm.bin", "size": 2}, timeout=30)
    assert created.status_code == 201
    links = created.json()["links"]
    assert admin.get(links["multipart"], timeout=30).status_code == 200
    signed = admin.post(links["sign"], json={"parts": [1]}, timeout=30).json()["parts"][0]["url"]
    assert requests.put(signed, data=b"ok", timeout=30).status_code == 200
    assert admin.post(links["complete"], json={}, timeout=30).status_code == 200
    assert admin.get(links["self"] + "/content", timeout=30).content == b"ok"
    assert admin.delete(links["self"], timeout=30).status_code == 204
    pending = next(f for f in listing if f["key"] == "pending.bin")
    assert admin.post(pending["links"]["abort"], timeout=30).status_code == 204
    assert admin.post(draft["links"]["publish"], timeout=30).status_code == 200


def test_owner_may_read_everything(scene, owner):
    for method, url, body in scene["calls"]:
        if method == "GET":
            assert call(owner.api(), method, url, body).status_code in (200, 302), url


# --- cookie sessions and cross-site protection ----------------------------------


@pytest.fixture()
def cookie_session(owner, live_server):
    """A requests session logged in with invenio-accounts' session cookie."""
    session = requests.Session()
    r = session.post(f"{live_server.url}/login", data={"email": owner.email, "password": owner.password}, timeout=30)
    assert r.status_code == 200, r.text
    return session


def test_cookie_session_same_origin_is_allowed(cookie_session, live_server, api_url):
    r = cookie_session.post(f"{api_url}/", json={}, headers={"Origin": live_server.url}, timeout=30)
    assert r.status_code == 201, r.text
    r = cookie_session.post(f"{api_url}/", json={}, headers={"Sec-Fetch-Site": "same-origin"}, timeout=30)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "headers, kwargs",
    [
        ({"Origin": "https://evil.example"}, {"json": {}}),
        ({"Sec-Fetch-Site": "cross-site"}, {"json": {}}),
        ({"Sec-Fetch-Site": "same-site"}, {"json": {}}),
        ({}, {"data": {"metadata": "x"}}),  # an HTML form from anywhere: not JSON
    ],
)
def test_cookie_session_cross_site_is_refused(cookie_session, api_url, state, headers, kwargs):
    before = state()
    r = cookie_session.post(f"{api_url}/", headers=headers, timeout=30, **kwargs)
    message = r.json()["message"]
    assert r.status_code == 403 and ("refused" in message or "must send JSON" in message)
    assert state() == before


def test_trusted_origin_is_allowed(cookie_session, api_url, app):
    app.config["OAREPO_S3_TRUSTED_ORIGINS"] = ["https://portal.example"]
    try:
        r = cookie_session.post(f"{api_url}/", json={}, headers={"Origin": "https://portal.example"}, timeout=30)
        assert r.status_code == 201
    finally:
        app.config["OAREPO_S3_TRUSTED_ORIGINS"] = []


def test_tokens_are_not_subject_to_origin_checks(owner, api_url):
    r = owner.api().post(f"{api_url}/", json={}, headers={"Origin": "https://elsewhere.example"}, timeout=30)
    assert r.status_code == 201
