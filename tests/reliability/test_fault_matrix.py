"""S3 faults during every operation that talks to S3: the fault matrix.

The app's control client goes through tests/fault_proxy.py (a fault-injecting
HTTP proxy in front of the S3 server); presigned URLs still point at S3
itself. For each operation x fault the test records what the caller saw,
whether the database and S3 stayed as they were, whether a retry without the
fault succeeded, and checks that afterwards the books and S3 agree.

Faults: ``unreachable`` (a closed port), ``slow`` (the proxy holds each
request 2.5 s, longer than the 1 s read timeout, then still forwards it:
S3 acts after the app gave up), ``500`` / ``503`` (every attempt answered
InternalError / SlowDown), ``503 once`` (one SlowDown, then botocore's
retry goes through). The app makes 2 attempts per call here.

The faults are the proxy's, so the S3 server behind it does not matter:
moto only.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from invenio_db import db

from oarepo_s3.cleanup import run_cleanup, sweep_orphans
from oarepo_s3.models import MultipartUploadSession, utcnow

from ..fault_proxy import FaultProxy
from ..helpers import put_parts
from ..rest.conftest import start_upload
from .books import books_problems
from .conftest import control_client_switch

pytestmark = pytest.mark.s3_backends("moto")

FAULTS = ["unreachable", "slow", "500", "503", "503 once"]
S3_METHOD = {"init": "POST", "resume": "GET", "complete": "POST", "abort": "DELETE", "cleanup": "DELETE"}
"""The S3 request each operation's fault hits (complete: CompleteMultipartUpload, after ListParts)."""
ALL_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
SLOW_SECONDS = 2.5
DB_KEYS = ("sessions", "objects", "files", "records")


@pytest.fixture()
def proxy(app, s3_server):
    """The app's control client, through a fault proxy (2 attempts, 1 s timeouts)."""
    proxy = FaultProxy(s3_server).start()
    with control_client_switch(app) as switch:
        proxy.use = lambda endpoint: switch(endpoint, OAREPO_S3_MAX_ATTEMPTS=2, OAREPO_S3_CONNECT_TIMEOUT=1,
                                            OAREPO_S3_READ_TIMEOUT=1)
        proxy.use(proxy.url)
        yield proxy
        proxy.stop()


def inject(proxy, fault: str, methods) -> None:
    """Start the fault."""
    if fault == "unreachable":
        proxy.use("http://127.0.0.1:9")
        return
    for method in methods:
        if fault == "slow":
            proxy.add_fault("delay", method, seconds=SLOW_SECONDS, times=None)
        elif fault == "503 once":
            proxy.add_fault("fail", method, times=1, status=503, code="SlowDown")
        else:
            status, code = (500, "InternalError") if fault == "500" else (503, "SlowDown")
            proxy.add_fault("fail", method, times=None, status=status, code=code)


def clear(proxy) -> None:
    """Stop the fault; wait until requests the proxy delayed have reached S3 (they still do)."""
    proxy.use(proxy.url)
    proxy.wait_idle(settle=0.1)
    proxy.reset()


@pytest.fixture(scope="module")
def matrix(figures):
    """operation -> fault -> what happened; written to the module's figures."""
    data = figures.setdefault("matrix", {})
    return data


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("operation", ["init", "resume", "sign", "complete", "abort", "cleanup"])
def test_fault(operation, fault, proxy, owner, draft, state, s3_client, s3_bucket, matrix):
    api = owner.api()
    upload = start_upload(owner, draft, key="p.bin", size=10)
    put_parts(upload["multipart_upload"], b"0123456789")
    links = upload["links"]
    if operation == "cleanup":
        db.session.commit()  # a new read transaction sees what the server committed
        row = db.session.get(MultipartUploadSession, upload["multipart_upload"]["id"])
        row.expires = utcnow() - timedelta(minutes=1)
        db.session.commit()

    def attempt(again: bool = False):
        """Do the operation once; return what the caller sees (``again``: as an operator retries a failed cleanup)."""
        if operation == "cleanup":
            report = run_cleanup(sweep=False, retry_failed=again)
            return {"expired": report.expired, "failures": report.failures}
        method, url, body = {
            "init": ("POST", f"{draft['links']['files']}?multipart=True", {"key": "new.bin", "size": 10}),
            "resume": ("GET", links["multipart"], None),
            "sign": ("POST", links["sign"], {"parts": [1]}),
            "complete": ("POST", links["complete"], {}),
            "abort": ("POST", links["abort"], None),
        }[operation]
        r = api.request(method, url, json=body, timeout=60)
        if r.status_code >= 400:
            assert r.headers["Content-Type"] == "application/json", r.text
        return {"status": r.status_code, "retry_after": r.headers.get("Retry-After")}

    before = state()
    inject(proxy, fault, ALL_METHODS if operation == "sign" else [S3_METHOD[operation]])
    first = attempt()
    clear(proxy)
    after = state()
    outcome = {
        "first": first,
        "db_unchanged": all(after[k] == before[k] for k in DB_KEYS),
        "s3_unchanged": after["s3_uploads"] == before["s3_uploads"] and after["s3_objects"] == before["s3_objects"],
    }
    if not (operation == "sign" or fault == "503 once"):
        outcome["retry"] = attempt(again=True)
    problems = books_problems(orphans_allowed=True)
    orphans = []
    if operation == "init":
        orphans = [o for o in sweep_orphans(grace=0) if getattr(o, "aborted", False)]
        outcome["orphans_swept"] = len(orphans)
    outcome["books_consistent_after"] = problems == [] and books_problems() == []
    matrix.setdefault(operation, {})[fault] = outcome

    success = {"init": 201, "resume": 200, "sign": 200, "complete": 200, "abort": 204}
    if operation == "sign":  # signing is local: S3's state does not matter
        assert first["status"] == 200 and outcome["db_unchanged"] and outcome["s3_unchanged"]
    elif fault == "503 once":  # botocore's second attempt went through
        assert first == ({"expired": 1, "failures": 0} if operation == "cleanup"
                         else {"status": success[operation], "retry_after": None})
    else:
        if operation == "cleanup":
            assert first == {"expired": 0, "failures": 1}
        else:
            assert first["status"] == 503 and first["retry_after"] == "5", first
        assert outcome["db_unchanged"], (before, after)
        if fault != "slow":
            assert outcome["s3_unchanged"], (before, after)
        assert outcome["retry"] == ({"expired": 1, "failures": 0} if operation == "cleanup"
                                    else {"status": success[operation], "retry_after": None})
    if operation == "init" and fault == "slow":
        assert outcome["orphans_swept"] >= 1  # S3 created the upload after the app gave up
    assert problems == [] and outcome["books_consistent_after"]
