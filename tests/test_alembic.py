"""The alembic migration creates exactly the tables the models describe (PostgreSQL lane)."""

from __future__ import annotations

import pytest
from flask import Flask
from invenio_db import InvenioDB, db
from sqlalchemy import inspect


@pytest.fixture()
def migrating_app(postgresql_uri):
    """Invenio's migrations need PostgreSQL (they ALTER constraints, which SQLite cannot)."""
    uri = postgresql_uri
    app = Flask("alembic_test")
    app.config.update(SQLALCHEMY_DATABASE_URI=uri, SECRET_KEY="x")
    InvenioDB(app)
    with app.app_context():
        db.drop_all()
        db.session.execute(db.text("DROP TABLE IF EXISTS alembic_version"))
        db.session.commit()
        yield app
        db.session.remove()
        db.drop_all()
        db.session.execute(db.text("DROP TABLE IF EXISTS alembic_version"))
        db.session.commit()


def test_upgrade_matches_models_and_downgrade_removes_table(migrating_app):
    alembic = migrating_app.extensions["invenio-db"].alembic
    alembic.upgrade()
    assert "oarepo_s3_multipart_upload" in inspect(db.engine).get_table_names()
    assert alembic.compare_metadata() == []

    alembic.downgrade(target="5b1f0c2a9d10")
    assert "oarepo_s3_multipart_upload" not in inspect(db.engine).get_table_names()
    alembic.upgrade()
    assert alembic.compare_metadata() == []
