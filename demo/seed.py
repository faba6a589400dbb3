"""The demo's database: migrations, the files location, two users with tokens, one draft.

Idempotent, so the data survives restarts: a new database is created as
``invenio db create`` does (tables, then alembic stamped at the current
heads), an existing one is upgraded with the alembic migrations; users,
tokens, the location and the first draft are created only when missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from invenio_accounts.utils import hash_password
from invenio_db import db
from invenio_db.utils import create_alembic_version_table
from invenio_files_rest.models import Location
from invenio_oauth2server.models import Token
from sqlalchemy import inspect

from oarepo_s3 import drafts
from oarepo_s3.errors import RecordNotFound

USERS = {
    "demo@example.org": "demo-password",
    "other@example.org": "other-password",
}
DRAFT_TITLE = "My first dataset"


def migrate(app) -> str:
    """Create or upgrade the tables; return what was done (``created`` or ``upgraded``)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # flask-alembic logs every step at INFO
    with app.app_context():
        if not inspect(db.engine).has_table("alembic_version"):
            db.create_all()
            create_alembic_version_table()
            return "created"
        app.extensions["invenio-db"].alembic.upgrade()
        return "upgraded"


def ensure_location(app, bucket: str) -> None:
    """The default files location points at ``s3://<bucket>``."""
    uri = f"s3://{bucket}"
    with app.app_context():
        location = Location.query.filter_by(name="default-s3").one_or_none()
        if location is None:
            db.session.add(Location(name="default-s3", uri=uri, default=True))
        elif location.uri != uri:
            location.uri = uri
        db.session.commit()


def ensure_users(app) -> dict[str, dict]:
    """The demo users, each with a personal token: ``{email: {id, password, token}}``."""
    datastore = app.extensions["security"].datastore
    info = {}
    with app.app_context():
        for email, password in USERS.items():
            user = datastore.find_user(email=email)
            if user is None:
                user = datastore.create_user(email=email, password=hash_password(password), active=True)
                db.session.flush()
            token = Token.query.filter_by(user_id=user.id, is_personal=True).order_by(Token.id).first()
            if token is None:
                token = Token.create_personal(f"demo token of {email}", user.id, is_internal=False)
            info[email] = {"id": user.id, "password": password, "token": token.access_token}
        db.session.commit()
    return info


def ensure_draft(app, owner_id: int, state_file: Path) -> str:
    """The demo draft's id: the one made at the first start if it still exists, else a new one."""
    with app.app_context():
        if state_file.exists():
            pid = json.loads(state_file.read_text()).get("draft_id")
            try:
                if pid and drafts.resolve(pid).status == drafts.DRAFT:
                    return pid
            except RecordNotFound:
                pass
        pid = drafts.create_draft(owner_id, {"title": DRAFT_TITLE}).pid_value
    state_file.write_text(json.dumps({"draft_id": pid}))
    return pid
