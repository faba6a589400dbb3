"""Reliability and security tests: the REST app of tests/rest (users, tokens, a draft) and a place for figures.

Figures the tests measure are written to ``test-artifacts/reliability/*.json``
(one file per test module and lane), from which docs/reliability.md is written.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from oarepo_s3.s3 import S3Client

from ..rest.conftest import api_url, app, draft, owner, state, users  # noqa: F401  (fixtures)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"


def lane_name(s3_backend, database_uri: str) -> str:
    """``moto-sqlite``, ``ceph-postgresql``..."""
    return f"{s3_backend.name}-{database_uri.split(':', 1)[0].split('+', 1)[0]}"


@contextmanager
def control_client_switch(flask_app):
    """``use(endpoint, **config)`` points the app's S3 control client elsewhere (a fault proxy); restored after.

    The presigner is built first, from the real endpoint: URLs keep pointing
    at S3, only the app's own control calls take the detour.

    (A plain helper, not a fixture: its names differ from the ``app`` and
    ``state`` fixtures imported above so as not to shadow them.)
    """
    extension = flask_app.extensions["oarepo-s3"]
    _ = extension.presigner  # built from the real endpoint first (a cached property)
    original = extension.__dict__.get("s3")

    def use(endpoint: str, **config) -> None:
        extension.__dict__["s3"] = S3Client.from_config({**flask_app.config, "S3_ENDPOINT_URL": endpoint, **config})

    try:
        yield use
    finally:
        if original is not None:
            extension.__dict__["s3"] = original
        else:
            extension.__dict__.pop("s3", None)


@pytest.fixture(scope="module")
def figures(request, s3_backend, database_uri):
    """A dict a module fills with what it measured; written as JSON when the module ends."""
    data: dict = {}
    yield data
    if data:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = request.module.__name__.rsplit(".", 1)[-1]
        path = ARTIFACTS / f"{name}.{lane_name(s3_backend, database_uri)}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
