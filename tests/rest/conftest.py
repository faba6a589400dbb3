"""A REST app with accounts, OAuth2 tokens and access control, served over real HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

import pytest
import requests
from flask import Blueprint
from invenio_access.models import ActionUsers
from invenio_access.permissions import superuser_access
from invenio_oauth2server.models import Token

from oarepo_s3.app import create_app
from oarepo_s3.views import multipart_actions


@pytest.fixture(scope="module")
def app(app_config):
    """The demo's API app (accounts, OAuth2 tokens, access, our blueprints) on the test's S3 and database."""
    app = create_app(app_config)
    app.register_blueprint(_seed_style_blueprint())
    yield app


def _seed_style_blueprint():
    """An app's own records blueprint using multipart_actions exactly as the seed README shows."""
    bp = Blueprint("my_records", __name__, url_prefix="/my/records")
    for rule, view in multipart_actions("myrec", None, None, None, True).items():
        bp.add_url_rule(f"/<pid_value>/{rule}", view_func=view, methods=["POST"])
    return bp


@dataclass
class User:
    """A test user with a password (for cookie sessions) and a personal token."""

    id: int
    email: str
    password: str
    token: str

    def api(self) -> requests.Session:
        """An HTTP session authenticated with the user's bearer token."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        return session


def _create_user(app, db, email, admin=False) -> User:
    datastore = app.extensions["security"].datastore
    password = "correct horse battery staple"
    from invenio_accounts.utils import hash_password

    user = datastore.create_user(email=email, password=hash_password(password), active=True)
    db.session.flush()
    from datetime import datetime

    user.confirmed_at = datetime.now(UTC)
    if admin:
        db.session.add(ActionUsers.allow(superuser_access, user=user))
    token = Token.create_personal(f"token-{email}", user.id, scopes=[], is_internal=False)
    db.session.commit()
    return User(user.id, email, password, token.access_token)


@pytest.fixture()
def users(app, db, location):
    """owner, other and admin."""
    return {
        "owner": _create_user(app, db, "owner@example.org"),
        "other": _create_user(app, db, "other@example.org"),
        "admin": _create_user(app, db, "admin@example.org", admin=True),
    }


@pytest.fixture()
def owner(users):
    return users["owner"]


@pytest.fixture()
def api_url(live_server, app):
    """Base URL of the drafts API on the live server."""
    return live_server.url + app.config["OAREPO_S3_DRAFTS_URL_PREFIX"]


@pytest.fixture()
def draft(owner, api_url):
    """A draft owned by ``owner``, as the API returned it."""
    response = owner.api().post(f"{api_url}/", json={"metadata": {"title": "test draft"}}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture()
def state(db, s3_client, s3_bucket):
    """A snapshot function of everything a rejected request must leave unchanged."""
    from invenio_files_rest.models import FileInstance, ObjectVersion
    from invenio_records.models import RecordMetadata

    from oarepo_s3.models import MultipartUploadSession

    def snapshot():
        # End the test's read transaction: on SQLite (WAL) it would keep showing the
        # snapshot it began with, and every "nothing changed" check would pass vacuously.
        db.session.commit()
        db.session.expire_all()
        return {
            "sessions": sorted((str(s.id), s.status.value) for s in db.session.query(MultipartUploadSession)),
            "objects": sorted((str(o.version_id), o.key, o.is_head) for o in db.session.query(ObjectVersion)),
            "files": sorted((str(f.id), f.readable, f.size) for f in db.session.query(FileInstance)),
            "records": sorted((str(r.id), r.version_id) for r in db.session.query(RecordMetadata)),
            "s3_uploads": sorted(
                u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
            ),
            "s3_objects": sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])),
        }

    return snapshot


def start_upload(user, draft, key="data.bin", size=1000, **extra):
    """POST an upload start; assert 201; return the JSON."""
    r = user.api().post(
        f"{draft['links']['files']}?multipart=True", json={"key": key, "size": size, **extra}, timeout=30
    )
    assert r.status_code == 201, r.text
    return r.json()
