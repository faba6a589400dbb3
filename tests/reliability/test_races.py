"""Races between requests on one upload, over real HTTP with real threads, on SQLite and PostgreSQL.

Each race ends with exactly one outcome, never a completed file deleted,
never an S3 object or upload without its database row (or the reverse):
:func:`books_problems` is empty after every repetition.

Two ways to race:

- ``held``: deterministic. The fault proxy holds S3's answer to the first
  contender's decisive S3 call (CompleteMultipartUpload, AbortMultipartUpload)
  while the second contender runs, so the second one always arrives in the
  middle of the first;
- ``free``: both contenders start together (a barrier) and the scheduler
  decides; repeated ``OAREPO_S3_RACE_REPETITIONS`` times (default 5).

Every outcome seen is written to the module's figures.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from invenio_db import db
from invenio_files_rest.models import ObjectVersion

from oarepo_s3.cleanup import expire_uploads
from oarepo_s3.models import MultipartUploadSession

from ..fault_proxy import FaultProxy
from ..helpers import put_parts
from ..rest.conftest import start_upload
from .books import books_problems
from .conftest import control_client_switch

REPETITIONS = int(os.environ.get("OAREPO_S3_RACE_REPETITIONS", "5"))


@pytest.fixture()
def proxy(app, s3_server):
    """The app's control client through the proxy (nothing injected unless a test asks)."""
    proxy = FaultProxy(s3_server).start()
    with control_client_switch(app) as switch:
        switch(proxy.url)
        yield proxy
        proxy.stop()


@pytest.fixture(scope="module")
def outcomes(figures):
    """race -> Counter of outcomes, in the module's figures."""
    return figures.setdefault("outcomes", {})


def ready_upload(owner, draft, key):
    """An upload whose only part is in S3: ready to be completed."""
    upload = start_upload(owner, draft, key=key, size=10)
    put_parts(upload["multipart_upload"], b"0123456789")
    return upload


def in_app_thread(app, fn):
    """Run ``fn`` with its own app context (its own database session), as a worker would."""

    def run():
        with app.app_context():
            try:
                return fn()
            finally:
                db.session.remove()

    return run


def post(session, url, body=None):
    r = session.post(url, json=body, timeout=60)
    return r.status_code


def cleanup_at_expiry(row_expires):
    """Run the expiry as if the clock had just passed the upload's expiry; how many it expired."""
    return sum(1 for item in expire_uploads(now=row_expires + timedelta(seconds=1)) if hasattr(item, "upload_id"))


def finish(s3_client, s3_bucket):
    """The invariant after every race."""
    assert books_problems() == []


def session_row(upload_id):
    db.session.commit()
    row = db.session.query(MultipartUploadSession).filter_by(upload_id=upload_id).one()
    status = row.status.value
    db.session.commit()
    return row, status


# --- complete x complete ----------------------------------------------------------


def test_two_completions_at_once(app, owner, draft, proxy, s3_client, s3_bucket, outcomes):
    seen = outcomes.setdefault("complete x complete", Counter())
    api = owner.api
    for i in range(REPETITIONS + 1):
        upload = ready_upload(owner, draft, f"cc-{i}.bin")
        url = upload["links"]["complete"]
        if i == 0:  # held: the second completion arrives while S3 completes the first
            rule = proxy.add_fault("hold", "POST")
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(post, api(), url, {})
                assert rule.reached.wait(30)
                second = pool.submit(post, api(), url, {})
                try:
                    second.result(timeout=1)  # PostgreSQL: waits on the row lock; let it
                except TimeoutError:
                    pass
                rule.release.set()
                statuses = (first.result(), second.result())
            proxy.reset()
        else:
            barrier = threading.Barrier(2)

            def contender(barrier, url):
                session = api()
                barrier.wait()
                return post(session, url, {})

            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(contender, barrier, url), pool.submit(contender, barrier, url)]
                statuses = tuple(f.result() for f in futures)
        kind = "held" if i == 0 else "free"
        seen[f"{kind}: {sorted(statuses)}"] += 1
        assert statuses == (200, 200)  # completion is idempotent: both see the one completed file
        _, status = session_row(upload["multipart_upload"]["upload_id"])
        assert status == "complete"
        content = api().get(upload["links"]["self"] + "/content", timeout=30)
        assert content.status_code == 200 and content.content == b"0123456789"
        finish(s3_client, s3_bucket)


# --- complete x abort ---------------------------------------------------------------


@pytest.mark.parametrize("first_one", ["complete", "abort"])
def test_completion_against_abort(app, owner, draft, proxy, s3_client, s3_bucket, outcomes, first_one):
    seen = outcomes.setdefault(f"complete x abort (held: {first_one} first)", Counter())
    api = owner.api
    for i in range(REPETITIONS + 1):
        upload = ready_upload(owner, draft, f"ca-{first_one}-{i}.bin")
        links = upload["links"]
        calls = {"complete": (links["complete"], {}), "abort": (links["abort"], None)}
        if i == 0:
            rule = proxy.add_fault("hold", "POST" if first_one == "complete" else "DELETE")
            other = "abort" if first_one == "complete" else "complete"
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(post, api(), *calls[first_one])
                assert rule.reached.wait(30)
                second = pool.submit(post, api(), *calls[other])
                try:
                    second.result(timeout=1)
                except TimeoutError:
                    pass
                rule.release.set()
                result = {first_one: first.result(), other: second.result()}
            proxy.reset()
            kind = "held"
        else:
            barrier = threading.Barrier(2)

            def contender(barrier, call):
                session = api()
                barrier.wait()
                return post(session, *call)

            with ThreadPoolExecutor(2) as pool:
                futures = {name: pool.submit(contender, barrier, call) for name, call in calls.items()}
                result = {name: f.result() for name, f in futures.items()}
            kind = "free"
        _, status = session_row(upload["multipart_upload"]["upload_id"])
        seen[f"{kind}: complete {result['complete']}, abort {result['abort']} -> {status}"] += 1
        # Exactly one wins; the loser is told why (409: complete/aborted already; 404: no such upload any more).
        if status == "complete":
            assert result["complete"] == 200 and result["abort"] in (404, 409), result
            assert api().get(links["self"] + "/content", timeout=30).content == b"0123456789"
        else:
            assert status == "aborted" and result["abort"] == 204 and result["complete"] in (404, 409), result
        finish(s3_client, s3_bucket)


# --- complete x cleanup at expiry -----------------------------------------------------


@pytest.mark.parametrize("first_one", ["complete", "cleanup"])
def test_completion_against_cleanup_at_expiry(app, owner, draft, proxy, s3_client, s3_bucket, outcomes, first_one):
    """The upload expires while it is being completed: the completed file is never deleted."""
    seen = outcomes.setdefault(f"complete x cleanup at expiry (held: {first_one} first)", Counter())
    api = owner.api
    for i in range(REPETITIONS + 1):
        upload = ready_upload(owner, draft, f"cx-{first_one}-{i}.bin")
        row, _ = session_row(upload["multipart_upload"]["upload_id"])
        expires = row.expires
        complete = (upload["links"]["complete"], {})
        cleanup = in_app_thread(app, lambda expires=expires: cleanup_at_expiry(expires))
        if i == 0:
            rule = proxy.add_fault("hold", "POST" if first_one == "complete" else "DELETE")
            with ThreadPoolExecutor(2) as pool:
                if first_one == "complete":
                    first = pool.submit(post, api(), *complete)
                else:
                    first = pool.submit(cleanup)
                assert rule.reached.wait(30)
                second = pool.submit(cleanup) if first_one == "complete" else pool.submit(post, api(), *complete)
                try:
                    second.result(timeout=1)
                except TimeoutError:
                    pass
                rule.release.set()
                if first_one == "complete":
                    result = {"complete": first.result(), "expired": second.result()}
                else:
                    result = {"expired": first.result(), "complete": second.result()}
            proxy.reset()
            kind = "held"
        else:
            barrier = threading.Barrier(2)

            def completer(barrier, complete):
                session = api()
                barrier.wait()
                return post(session, *complete)

            def cleaner(barrier, cleanup):
                barrier.wait()
                return cleanup()

            with ThreadPoolExecutor(2) as pool:
                c, e = pool.submit(completer, barrier, complete), pool.submit(cleaner, barrier, cleanup)
                result = {"complete": c.result(), "expired": e.result()}
            kind = "free"
        _, status = session_row(upload["multipart_upload"]["upload_id"])
        seen[f"{kind}: complete {result['complete']}, expired {result['expired']} -> {status}"] += 1
        if status == "complete":
            assert result == {"complete": 200, "expired": 0}, result
            assert api().get(upload["links"]["self"] + "/content", timeout=30).content == b"0123456789"
        else:
            assert status == "expired" and result["expired"] == 1 and result["complete"] in (404, 409, 410), result
        finish(s3_client, s3_bucket)


# --- init x init ----------------------------------------------------------------------


def test_two_inits_of_the_same_key(app, owner, draft, proxy, s3_client, s3_bucket, outcomes):
    """Both check that the key is free, then both create it: exactly one may succeed."""
    seen = outcomes.setdefault("init x init (same key)", Counter())
    url = f"{draft['links']['files']}?multipart=True"
    for i in range(REPETITIONS + 1):
        key = f"ii-{i}.bin"
        body = {"key": key, "size": 10}
        if i == 0:  # held: the second init arrives while S3 creates the first one's upload
            rule = proxy.add_fault("hold", "POST")
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(post, owner.api(), url, body)
                assert rule.reached.wait(30)
                second = pool.submit(post, owner.api(), url, body)
                try:
                    second.result(timeout=1)
                except TimeoutError:
                    pass
                rule.release.set()
                statuses = (first.result(), second.result())
            proxy.reset()
            kind = "held"
        else:
            barrier = threading.Barrier(2)

            def contender(barrier, body):
                session = owner.api()
                barrier.wait()
                return post(session, url, body)

            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(contender, barrier, body), pool.submit(contender, barrier, body)]
                statuses = tuple(f.result() for f in futures)
            kind = "free"
        seen[f"{kind}: {sorted(statuses)}"] += 1
        assert sorted(statuses) == [201, 409], statuses
        db.session.commit()
        versions = db.session.query(ObjectVersion).filter_by(key=key).count()
        db.session.commit()
        assert versions == 1
        finish(s3_client, s3_bucket)
