"""Links the API answers or stores come from configured hosts, never from an arbitrary Host header.

- ``SERVER_NAME``: every link is on that host, whatever ``Host`` says;
- ``TRUSTED_HOSTS``: a request for another host is refused (400), links are on the trusted host asked for;
- neither: links are paths (the client resolves them against the API's URL), in answers and in the
  URLs a session stores.
"""

from __future__ import annotations

import pytest
from invenio_db import db

from oarepo_s3.app import create_app
from oarepo_s3.models import MultipartUploadSession

# Parsing, hosts and budgets do not depend on the S3 implementation: the moto lanes (SQLite,
# PostgreSQL) cover them; the Ceph lane's time goes to what only a real S3 shows.
pytestmark = pytest.mark.s3_backends("moto")


EVIL = "evil.example"


@pytest.fixture()
def client_of(app_config, users):
    """``client_of(**config)``: a test client of another app on the same database and S3, with that config."""
    def make(**overrides):
        other = create_app({**app_config, **overrides}, name="oarepo_s3_hosts")
        return other.test_client()

    return make


def start(client, owner, host: str):
    headers = {"Authorization": f"Bearer {owner.token}", "Host": host}
    draft = client.post("/draft/records/", json={"metadata": {}}, headers=headers)
    assert draft.status_code == 201, draft.get_data(as_text=True)
    pid = draft.json["id"]
    upload = client.post(f"/draft/records/{pid}/files/?multipart=True", json={"key": "h.bin", "size": 10},
                         headers=headers)
    assert upload.status_code == 201, upload.get_data(as_text=True)
    return draft, upload


def every_link(data) -> list[str]:
    """Every URL in the API's JSON: links, and the URLs a session echoes."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str) and (key in ("complete_url", "abort_url", "location") or key.endswith("url")):
                found.append(value)
            found.extend(every_link(value) if not isinstance(value, str) else [])
        found.extend(v for k, v in (data.get("links") or {}).items() if isinstance(v, str))
    elif isinstance(data, list):
        for item in data:
            found.extend(every_link(item))
    return found


def stored_urls() -> list[str]:
    db.session.commit()
    return [u for row in db.session.query(MultipartUploadSession) for u in (row.complete_url, row.abort_url)]


def test_without_a_configured_host_links_are_paths(client_of, owner):
    client = client_of(TRUSTED_HOSTS=None, SERVER_NAME=None)
    draft, upload = start(client, owner, EVIL)
    links = every_link(draft.json) + [u for u in every_link(upload.json) if "X-Amz-" not in u]
    assert links and all(u.startswith("/draft/records/") or u.startswith("/records/") for u in links), links
    assert all(EVIL not in u for u in links + stored_urls())
    assert all(u.startswith("/draft/records/") for u in stored_urls())


def test_server_name_is_the_only_host_of_links(client_of, owner):
    client = client_of(TRUSTED_HOSTS=None, SERVER_NAME="repo.example.org")
    draft, upload = start(client, owner, EVIL)
    links = every_link(draft.json) + [u for u in every_link(upload.json) if "X-Amz-" not in u]
    assert links and all(u.startswith("http://repo.example.org/") for u in links), links
    assert all(u.startswith("http://repo.example.org/") for u in stored_urls())


def test_trusted_hosts_refuse_any_other_host(client_of, owner):
    client = client_of(TRUSTED_HOSTS=["repo.example.org"], SERVER_NAME=None)
    refused = client.post("/draft/records/", json={}, headers={"Authorization": f"Bearer {owner.token}", "Host": EVIL})
    assert refused.status_code == 400
    assert stored_urls() == []
    draft, upload = start(client, owner, "repo.example.org")
    links = every_link(draft.json) + [u for u in every_link(upload.json) if "X-Amz-" not in u]
    assert all(u.startswith("http://repo.example.org/") for u in links), links
