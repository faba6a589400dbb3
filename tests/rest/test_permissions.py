"""Who may do what, on every endpoint: anonymous 401, another user 403, owner and admin allowed.

The matrix is generated from the app's url_map: every endpoint of the
oarepo-s3 blueprints (and of the seed-style blueprint the REST tests mount)
must have an entry in ``CALLS``, so a new endpoint without one fails
:func:`test_every_endpoint_is_in_the_matrix`.
"""

from __future__ import annotations

import pytest
import requests

from ..helpers import put_parts
from .conftest import start_upload

OURS = ("oarepo_s3_drafts.", "oarepo_s3_records.", "my_records.")

FORM = {"key": "uppy-empty.txt"}
"""The body of ``uppy_empty``: sent as Uppy's form, with an empty ``file``, not as JSON."""

# endpoint -> (method, URL built from the scene, JSON body, what the owner or an admin gets)
CALLS = {
    "oarepo_s3_drafts.create": ("POST", lambda s: s["api"] + "/", {"metadata": {}}, 201),
    "oarepo_s3_drafts.record": ("GET", lambda s: s["draft"]["links"]["self"], None, 200),
    "oarepo_s3_drafts.publish": ("POST", lambda s: s["to_publish"]["links"]["publish"], None, 200),
    "oarepo_s3_drafts.files": ("GET", lambda s: s["draft"]["links"]["files"], None, 200),
    "oarepo_s3_drafts.init_upload": (
        "POST", lambda s: s["draft"]["links"]["files"] + "?multipart=True", {"key": "new.bin", "size": 10}, 201
    ),
    "oarepo_s3_drafts.file": ("GET", lambda s: s["files"]["resume"]["links"]["self"], None, 200),
    "oarepo_s3_drafts.delete_file": ("DELETE", lambda s: s["files"]["deleted"]["links"]["self"], None, 204),
    "oarepo_s3_drafts.content": ("GET", lambda s: s["files"]["done"]["links"]["self"] + "/content", None, 302),
    "oarepo_s3_drafts.multipart": ("GET", lambda s: s["files"]["resume"]["links"]["multipart"], None, 200),
    "oarepo_s3_drafts.sign": ("POST", lambda s: s["files"]["resume"]["links"]["sign"], {"parts": [1]}, 200),
    "oarepo_s3_drafts.oarepo_s3_drafts_upload_complete": (
        "POST", lambda s: s["files"]["complete"]["links"]["complete"], {}, 200
    ),
    "oarepo_s3_drafts.oarepo_s3_drafts_upload_abort": (
        "POST", lambda s: s["files"]["abort"]["links"]["abort"], None, 204
    ),
    "oarepo_s3_drafts.uppy_create": (
        "POST", lambda s: s["uppy"], {"filename": "u.bin", "type": "x/y", "metadata": {"size": 5}}, 200
    ),
    "oarepo_s3_drafts.uppy_list_parts": ("GET", lambda s: s.uppy_url("resume"), None, 200),
    "oarepo_s3_drafts.uppy_sign_batch": ("GET", lambda s: s.uppy_url("resume", "/batch", "&partNumbers=1"), None, 200),
    "oarepo_s3_drafts.uppy_sign_part": ("GET", lambda s: s.uppy_url("resume", "/1"), None, 200),
    "oarepo_s3_drafts.uppy_complete": ("POST", lambda s: s.uppy_url("uppy_complete", "/complete"), {}, 200),
    "oarepo_s3_drafts.uppy_abort": ("DELETE", lambda s: s.uppy_url("uppy_abort"), None, 200),
    "oarepo_s3_drafts.uppy_params": ("GET", lambda s: s["draft"]["links"]["uppy"] + "/s3/params", None, 400),
    "oarepo_s3_drafts.uppy_empty": ("POST", lambda s: s["draft"]["links"]["uppy"] + "/s3/empty", FORM, 204),
    "oarepo_s3_records.record": ("GET", lambda s: s["published"]["links"]["self"], None, 200),
    "oarepo_s3_records.files": ("GET", lambda s: s["published"]["links"]["self"] + "/files/", None, 200),
    "oarepo_s3_records.file": ("GET", lambda s: s["published"]["links"]["self"] + "/files/pub.bin", None, 200),
    "oarepo_s3_records.content": (
        "GET", lambda s: s["published"]["links"]["self"] + "/files/pub.bin/content", None, 302
    ),
    "my_records.myrec_upload_complete": (
        "POST", lambda s: s.seed_url("seed_complete", "complete-multipart"), {}, 200
    ),
    "my_records.myrec_upload_abort": ("POST", lambda s: s.seed_url("seed_abort", "abort-multipart"), None, 204),
}
PUBLIC = {e for e in CALLS if e.startswith("oarepo_s3_records.")}


class Scene(dict):
    """Drafts and files in every state the calls need, one file per state-changing call."""

    def uppy_url(self, name, tail="", query=""):
        upload = self["files"][name]
        return f"{self['uppy']}/{upload['multipart_upload']['upload_id']}{tail}?key={upload['key']}{query}"

    def seed_url(self, name, action):
        return f"{self['base']}/my/records/{self['draft']['id']}/files/{self['files'][name]['key']}/{action}"


def _completed(owner, draft, key, payload=b"abc"):
    upload = start_upload(owner, draft, key=key, size=len(payload))
    parts = put_parts(upload["multipart_upload"], payload)
    assert owner.api().post(upload["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
    return upload


def _parts_uploaded(owner, draft, key, payload=b"abc"):
    upload = start_upload(owner, draft, key=key, size=len(payload))
    put_parts(upload["multipart_upload"], payload)
    return upload


@pytest.fixture()
def scene(owner, draft, api_url, live_server):
    """A draft with pending, ready and completed files, an empty draft to publish, a published record."""
    api = owner.api()
    files = {name: start_upload(owner, draft, key=f"{name}.bin", size=100)
             for name in ("resume", "abort", "uppy_abort", "seed_abort")}
    files.update({name: _parts_uploaded(owner, draft, f"{name}.bin")
                  for name in ("complete", "uppy_complete", "seed_complete")})
    files.update({name: _completed(owner, draft, f"{name}.bin") for name in ("done", "deleted")})
    to_publish = api.post(f"{api_url}/", json={"metadata": {}}, timeout=30).json()
    published = api.post(f"{api_url}/", json={"metadata": {}}, timeout=30).json()
    _completed(owner, published, "pub.bin")
    published = api.post(published["links"]["publish"], timeout=30).json()
    return Scene(api=api_url, base=live_server.url, draft=draft, to_publish=to_publish, published=published,
                 files=files, uppy=draft["links"]["uppy"] + "/s3/multipart")


def call(session, scene, endpoint):
    method, url, body, _ = CALLS[endpoint]
    if body is FORM:
        return session.request(method, url(scene), data=body, files={"file": ("e.txt", b"")},
                               allow_redirects=False, timeout=30)
    return session.request(method, url(scene), json=body, allow_redirects=False, timeout=30)


def test_every_endpoint_is_in_the_matrix(app):
    served = {rule.endpoint for rule in app.url_map.iter_rules()
              if rule.endpoint.startswith(OURS) and not rule.endpoint.endswith(".not_routed")}  # no operation
    assert served == set(CALLS), f"add {sorted(served - set(CALLS))} to CALLS; remove {sorted(set(CALLS) - served)}"


def test_anonymous_gets_401_and_changes_nothing(scene, state):
    before = state()
    for endpoint in CALLS:
        r = call(requests.Session(), scene, endpoint)
        want = CALLS[endpoint][3] if endpoint in PUBLIC else 401
        assert r.status_code == want, (endpoint, r.status_code, r.text)
        if want == 401:
            assert r.headers["Content-Type"] == "application/json" and r.json()["status"] == 401
    assert state() == before


def test_a_bad_token_is_not_a_user(scene, state):
    before = state()
    session = requests.Session()
    session.headers["Authorization"] = "Bearer not-a-token"
    for endpoint in CALLS:
        want = CALLS[endpoint][3] if endpoint in PUBLIC else 401
        assert call(session, scene, endpoint).status_code == want, endpoint
    assert state() == before


def test_other_user_gets_403_and_changes_nothing(scene, users, state):
    before = state()
    other = users["other"].api()
    for endpoint in CALLS:
        r = call(other, scene, endpoint)
        if endpoint in PUBLIC:
            assert r.status_code == CALLS[endpoint][3], endpoint
        elif endpoint == "oarepo_s3_drafts.create":
            assert r.status_code == 201  # anyone signed in may create a draft of their own
        else:
            assert r.status_code == 403, (endpoint, r.status_code, r.text)
            assert "owner" in r.json()["message"]
    after = state()
    assert len(after["records"]) == len(before["records"]) + 1  # that one new draft
    after["records"] = before["records"] = None
    assert after == before


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owner_and_admin_may_do_everything(scene, users, role):
    session = users[role].api()
    for endpoint, (_, _, _, want) in CALLS.items():
        r = call(session, scene, endpoint)
        assert r.status_code == want, (role, endpoint, r.status_code, r.text)
    files = {f["key"]: f for f in session.get(scene["draft"]["links"]["files"], timeout=30).json()["entries"]}
    assert not {"abort.bin", "uppy_abort.bin", "seed_abort.bin", "deleted.bin"} & set(files)
    assert {files[k]["status"] for k in ("complete.bin", "uppy_complete.bin", "seed_complete.bin")} == {"completed"}


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
