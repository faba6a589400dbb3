"""Per-user budgets (oarepo_s3.ratelimit) cover every request that costs S3 calls, new rows or signed URLs.

For each budget: every endpoint that counts against it is called once,
then once more over the limit: 429 naming the budget and its setting,
``Retry-After``, and nothing changed. Other users and anonymous callers are
not slowed down by someone else's budget.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import requests

from oarepo_s3.ratelimit import BUDGETS

from ..helpers import put_parts
from ..rest.conftest import start_upload

# Parsing, hosts and budgets do not depend on the S3 implementation: the moto lanes (SQLite,
# PostgreSQL) cover them; the Ceph lane's time goes to what only a real S3 shows.
pytestmark = pytest.mark.s3_backends("moto")



@pytest.fixture()
def limit(app):
    """``limit(budget, value)``: that budget's limit for one test, every other budget off, fresh counts."""
    limiter = app.extensions["oarepo-s3"].rate_limiter
    old = {setting: app.config.get(setting) for setting in BUDGETS.values()}

    def set_limit(budget: str | None, value: str | None) -> None:
        for name, setting in BUDGETS.items():
            app.config[setting] = value if name == budget else None
        limiter.reset()

    set_limit(None, None)
    yield set_limit
    app.config.update(old)
    limiter.reset()


def uppy(draft: dict, upload: dict) -> str:
    return f"{draft['links']['uppy']}/s3/multipart/{quote(upload['multipart_upload']['upload_id'], safe='')}"


def calls(budget: str, owner, draft: dict, api_url: str) -> list[tuple[str, str, dict | None]]:
    """One request of each endpoint that counts against ``budget`` (what they need is prepared unlimited)."""
    files = f"{draft['links']['files']}?multipart=True"
    if budget == "sign":
        upload = start_upload(owner, draft, key="s.bin", size=10)
        base = uppy(draft, upload)
        return [("POST", files, {"key": "s2.bin", "size": 10}), ("POST", upload["links"]["sign"], {"parts": [1]}),
                ("GET", f"{base}/batch?key=s.bin&partNumbers=1", None), ("GET", f"{base}/1?key=s.bin", None)]
    if budget == "start":
        return [("POST", files, {"key": "t1.bin", "size": 10}), ("POST", files, {"key": "t0.bin", "size": 0}),
                ("POST", f"{draft['links']['uppy']}/s3/multipart",
                 {"filename": "t2.bin", "type": "", "metadata": {"size": 10}})]
    if budget == "list":
        upload = start_upload(owner, draft, key="l.bin", size=10)
        return [("GET", upload["links"]["multipart"], None), ("GET", f"{uppy(draft, upload)}?key=l.bin", None)]
    if budget == "finish":
        done = [start_upload(owner, draft, key=f"f{i}.bin", size=10) for i in range(5)]
        for upload in done[:3]:
            put_parts(upload["multipart_upload"], b"0123456789")
        seed = api_url.replace("/draft/records", "/my/records") + f"/{draft['id']}/files"
        return [("POST", done[0]["links"]["complete"], {}), ("POST", f"{seed}/f1.bin/complete-multipart", {}),
                ("POST", f"{uppy(draft, done[2])}/complete?key=f2.bin", {"parts": None}),
                ("POST", f"{seed}/f3.bin/abort-multipart", None),
                ("DELETE", f"{uppy(draft, done[4])}?key=f4.bin", None),
                ("DELETE", done[0]["links"]["self"], None)]
    assert budget == "draft"
    return [("POST", f"{api_url}/", {"metadata": {}}), ("POST", draft["links"]["publish"], None)]


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_every_endpoint_of_a_budget_counts_and_the_excess_is_429(limit, budget, owner, users, draft, api_url, state):
    api = owner.api()
    todo = calls(budget, owner, draft, api_url)
    limit(budget, f"{len(todo)}/minute")
    for method, url, body in todo:
        r = api.request(method, url, json=body, timeout=30)
        assert r.status_code < 400, (budget, url, r.status_code, r.text)
    before = state()
    for method, url, body in todo:
        r = api.request(method, url, json=body, timeout=30)
        assert r.status_code == 429, (budget, url, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        limit_text = f"{len(todo)} per 1 minute ({BUDGETS[budget]})"
        assert r.json()["errors"] == [{"field": "rate_limit", "message": limit_text}]
        assert f"({budget})" in r.json()["message"]
    assert state() == before
    # Reading is not limited, and the budget is per user: the administrator is not slowed down.
    assert api.get(draft["links"]["self"], timeout=30).status_code == 200
    admin = users["admin"].api()
    first = todo[0]
    assert admin.request(first[0], first[1], json=first[2], timeout=30).status_code != 429


def test_anonymous_callers_get_their_401_not_429(limit, owner, draft):
    limit("sign", "1/minute")
    upload = start_upload(owner, draft, key="a.bin", size=10)
    base = uppy(draft, upload)
    for method, url in [("POST", upload["links"]["sign"]), ("GET", f"{base}/batch?key=a.bin&partNumbers=1")]:
        assert requests.request(method, url, json={"parts": [1]}, timeout=30).status_code == 401


def test_another_users_requests_count_against_their_own_budget(limit, owner, users, draft):
    upload = start_upload(owner, draft, key="a.bin", size=10)
    limit("sign", "1/minute")
    other = users["other"].api()
    base = uppy(draft, upload)
    statuses = [other.get(f"{base}/batch?key=a.bin&partNumbers=1", timeout=30).status_code for _ in range(2)]
    assert statuses == [403, 429]  # counted like any request of that user, then refused
    assert owner.api().post(upload["links"]["sign"], json={"parts": [1]}, timeout=30).status_code == 200


@pytest.mark.parametrize("off", [None, ""])
def test_no_limit_when_unset(limit, owner, draft, off):
    limit("sign", off)
    upload = start_upload(owner, draft, key="a.bin", size=10)
    api = owner.api()
    for _ in range(30):
        assert api.post(upload["links"]["sign"], json={"parts": [1]}, timeout=30).status_code == 200


FREE = {"record", "files", "file", "content", "uppy_params", "not_routed"}
"""Endpoints that cost no S3 call, no new row and no part URL: reads (a download's redirect only signs a GET)."""


def test_every_endpoint_is_free_or_counted(app):
    """A new endpoint must be put in a budget (ENDPOINT_BUDGETS) or in FREE, with a reason."""
    from oarepo_s3.ratelimit import ENDPOINT_BUDGETS

    endpoints = {rule.endpoint.rpartition(".")[2] for rule in app.url_map.iter_rules()
                 if rule.endpoint.startswith("oarepo_s3_drafts.")}
    counted_by_the_view = {"oarepo_s3_drafts_upload_complete", "oarepo_s3_drafts_upload_abort"}  # the seed's
    assert endpoints - FREE - counted_by_the_view == set(ENDPOINT_BUDGETS)
