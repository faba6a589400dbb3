"""docs/openapi.yaml is a valid OpenAPI document and describes exactly the routes the app serves."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from openapi_spec_validator import validate

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text())
OURS = ("oarepo_s3_drafts.", "oarepo_s3_records.")


def test_spec_is_valid_openapi():
    validate(SPEC)


def test_every_route_is_described_and_nothing_else(app):
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(OURS) or rule.endpoint.endswith(".not_routed"):
            continue  # (not_routed: every other path of the API gets its JSON 404/405, no operation)
        path = re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: "{" + {"pid_value": "pid", "upload_id": "uploadId",
                                                                  "part_number": "partNumber"}.get(m[1], m[1]) + "}",
                      rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((method.lower(), path))
    described = {(method, path) for path, item in SPEC["paths"].items() for method in item if method != "parameters"}
    assert served == described
