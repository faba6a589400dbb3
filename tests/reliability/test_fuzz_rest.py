"""Fuzzing every REST operation of docs/openapi.yaml with schemathesis against the live app.

For each operation, three kinds of generated requests, sent over real HTTP
with the owner's token:

- ``positive``: valid by the schema, aimed at a real draft and a real upload
  in progress (fixed path parameters), so requests get past routing;
- ``negative``: the same targets with bodies and query strings that break the
  schema;
- ``free``: valid by the schema with generated path parameters (unknown
  records, odd keys).

Every answer must be below 500, and JSON when it is an error; after every
rejected (4xx) request the database (records, files_object, files_files,
sessions) and S3 (objects and multipart uploads) must be exactly as before.
When an accepted request changed the scene (abort, delete, publish...), a
fresh one is built. ``OAREPO_S3_FUZZ_EXAMPLES`` sets the examples per
operation and kind (default 8: about 500 requests, a minute per lane).
It runs on the moto lanes (``OAREPO_S3_FUZZ_BACKENDS=moto,ceph`` adds
Ceph's): what it checks (parsing, validation, error shapes, nothing
changed after a 4xx) does not depend on the S3 server.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from ..helpers import put_parts
from ..rest.conftest import start_upload

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text())
EXAMPLES = int(os.environ.get("OAREPO_S3_FUZZ_EXAMPLES", "8"))
FUZZ_BACKENDS = os.environ.get("OAREPO_S3_FUZZ_BACKENDS", "moto").split(",")
"""Input handling is the app's: the Ceph lane would add a minute to the suite and check nothing more."""

CHANGES_THE_SCENE = {
    "publishDraft", "deleteDraftFile", "completeUpload", "abortUpload", "uppyAbort", "uppyComplete",
}
"""Operations whose success removes what the fixed path parameters point at."""


@pytest.fixture()
def no_sign_limit(app):
    """Fuzzing signs far more often than a user should: lift the per-user limit for it."""
    old = app.config["OAREPO_S3_SIGN_RATE_LIMIT"]
    app.config["OAREPO_S3_SIGN_RATE_LIMIT"] = None
    yield
    app.config["OAREPO_S3_SIGN_RATE_LIMIT"] = old


class Scene:
    """A draft with one upload in progress (parts in S3) and one completed file."""

    def __init__(self, owner, api_url):
        self.owner, self.api_url = owner, api_url
        self.rebuild()

    def rebuild(self):
        api = self.owner.api()
        draft = api.post(f"{self.api_url}/", json={"metadata": {"title": "fuzz"}}, timeout=30).json()
        self.pid = draft["id"]
        self.pending = start_upload(self.owner, draft, key="pending.bin", size=10)
        put_parts(self.pending["multipart_upload"], b"0123456789")
        done = start_upload(self.owner, draft, key="done.bin", size=3)
        parts = put_parts(done["multipart_upload"], b"abc")
        assert api.post(done["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
        if not hasattr(self, "published"):
            published = api.post(f"{self.api_url}/", json={}, timeout=30).json()
            done = start_upload(self.owner, published, key="done.bin", size=3)
            parts = put_parts(done["multipart_upload"], b"abc")
            assert api.post(done["links"]["complete"], json={"parts": parts}, timeout=30).status_code == 200
            self.published = api.post(published["links"]["publish"], timeout=30).json()["id"]

    def path_parameters(self, operation) -> dict:
        """Values that reach past routing: the current draft, its pending upload; published: its file."""
        names = {p.name for p in operation.path_parameters}
        if operation.path.startswith("/records/"):
            values = {"pid": self.published, "key": "done.bin"}
        else:
            values = {"pid": self.pid, "key": "pending.bin", "partNumber": 1,
                      "uploadId": self.pending["multipart_upload"]["upload_id"]}
        return {k: v for k, v in values.items() if k in names}

    def query(self, operation) -> dict:
        return {"key": "pending.bin"} if any(p.name == "key" for p in operation.query) else {}


def _operations():
    schema = schemathesis.openapi.from_dict(SPEC)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.s3_backends(*FUZZ_BACKENDS)
def test_fuzz_every_operation(owner, api_url, live_server, state, no_sign_limit, figures):
    scene = Scene(owner, api_url)
    session = owner.api()
    session.headers["Authorization"] = f"Bearer {owner.token}"
    statuses: dict[str, Counter] = {}
    problems: list[str] = []
    snapshot = {"now": state()}  # taken again after every accepted request

    def run(operation, kind, strategy, aim: bool):
        counts = statuses.setdefault(operation.label, Counter())

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure as is
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case):
            if aim:  # the scene may have been rebuilt since the strategy was made
                case.path_parameters.update(scene.path_parameters(operation))
                if scene.query(operation):
                    case.query.update(scene.query(operation))
            before = snapshot["now"]
            response = case.call(base_url=live_server.url, session=session, allow_redirects=False, timeout=30)
            counts[f"{kind} {response.status_code}"] += 1
            where = f"{operation.label} [{kind}] {case.as_curl_command()}"
            assert response.status_code < 500, f"{where}\n-> {response.status_code} {response.text[:500]}"
            if response.status_code >= 400:
                content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
                assert content_type in (["application/json"], "application/json"), f"{where}\n-> {content_type}"
                assert state() == before, f"{where}\n-> {response.status_code} changed the database or S3"
                return
            if operation.definition.raw.get("operationId") in CHANGES_THE_SCENE:
                scene.rebuild()
            snapshot["now"] = state()

        try:
            fuzz()
        except AssertionError as e:
            problems.append(str(e))
        except Unsatisfiable:  # e.g. no parameter left to break in negative mode
            counts[f"{kind} n/a"] += 1

    for operation in _operations():
        fixed = {"path_parameters": scene.path_parameters(operation)}
        if scene.query(operation):
            fixed["query"] = scene.query(operation)
        run(operation, "positive", operation.as_strategy(GenerationMode.POSITIVE, **fixed), aim=True)
        run(operation, "negative", operation.as_strategy(GenerationMode.NEGATIVE, **fixed), aim=True)
        run(operation, "free", operation.as_strategy(GenerationMode.POSITIVE), aim=False)

    figures["examples_setting"] = EXAMPLES
    figures["cases"] = {label: dict(sorted(c.items())) for label, c in statuses.items()}
    figures["total_cases"] = sum(n for c in statuses.values() for k, n in c.items() if "n/a" not in k)
    figures["problems"] = problems
    print(f"\nfuzzed {figures['total_cases']} requests over {len(statuses)} operations")
    assert problems == [], "\n\n".join(problems)
    assert len(statuses) == sum(len([m for m in item if m != "parameters"]) for item in SPEC["paths"].values())


# --- regressions found by the fuzzer -------------------------------------------------


@pytest.mark.parametrize("filename", [None, "", 7, ["a"]])
def test_uppy_create_without_a_filename_is_400_not_500(owner, draft, state, filename):
    """Was a 500: the key went unchecked into url_for before any validation."""
    before = state()
    body = {"type": "x/y", "metadata": {"size": 5}} | ({} if filename is None else {"filename": filename})
    r = owner.api().post(draft["links"]["uppy"] + "/s3/multipart", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["errors"] == [{"field": "filename", "message": "must be a non-empty string (the file's name)"}]
    assert state() == before


@pytest.mark.parametrize("content_type", ["t\u00e9xt/plain", "text/plain\u2028", "a/b\x7f", " text/plain"])
def test_content_type_outside_printable_ascii_is_400_not_503(owner, draft, state, content_type):
    """Was a 503 on Ceph: the Content-Type header broke CreateMultipartUpload's signature ("S3 unavailable")."""
    before = state()
    api = owner.api()
    rest = api.post(f"{draft['links']['files']}?multipart=True",
                    json={"key": "a.bin", "size": 10, "multipart_content_type": content_type}, timeout=30)
    uppy = api.post(draft["links"]["uppy"] + "/s3/multipart",
                    json={"filename": "a.bin", "type": content_type, "metadata": {"size": 10}}, timeout=30)
    assert (rest.status_code, uppy.status_code) == (400, 400), (rest.text, uppy.text)
    assert [e["field"] for e in rest.json()["errors"]] == ["multipart_content_type"]
    assert [e["field"] for e in uppy.json()["errors"]] == ["type"]
    assert state() == before
