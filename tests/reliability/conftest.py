"""Reliability and security tests: the REST app of tests/rest (users, tokens, a draft) and a place for figures.

Figures the tests measure are written to ``test-artifacts/reliability/*.json``
(one file per test module and lane), from which docs/reliability.md is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..rest.conftest import api_url, app, draft, owner, state, users  # noqa: F401  (fixtures)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"


def lane_name(s3_backend, database_uri: str) -> str:
    """``moto-sqlite``, ``ceph-postgresql``..."""
    return f"{s3_backend.name}-{database_uri.split(':', 1)[0].split('+', 1)[0]}"


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
