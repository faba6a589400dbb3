"""InvenioRDM's multipart transfer under concurrency: random mixes of its operations, real HTTP, then the audit.

Six client threads do random operations on one record's files through
records-resources' FileResource, all at once: init (a thread's inits collide
with its own files, and many go over the bucket's quota, which all threads
share), upload the part and commit, delete (pending or committed), read and
list; meanwhile a thread runs the expiry (uploads expire within seconds here).

Two kinds of 500 are records-resources' own and are allowed (and counted,
see :func:`_records_resources_race`): it serializes its answer after its
transaction committed, re-reading the record's file rows, so a file another
request deleted in that instant makes its ``to_dict`` raise
``ObjectDeletedError``; and two requests that change the same record from
the same revision make the second fail on the record's version counter
(``StaleDataError``, on PostgreSQL). Both happen as often with invenio-s3's
storage (measured: 4-7 of each per run, plus a moto ``KeyError`` to parts of
aborted uploads). Any other exception on the server fails the test. Each
thread changes only its own keys, which makes those races rarer. No request may answer 5xx, and at the
end :func:`oarepo_s3.audit.audit` finds no problem: the bucket's size is the
sum of its files and reservations, the quota holds, and S3 holds nothing the
books do not know (and the reverse).

The seed of a run is in its failure message (``OAREPO_S3_RDM_SEED`` repeats it).
"""

from __future__ import annotations

import os
import random
import threading
import time
import traceback
from collections import Counter
from datetime import timedelta

import celery._state
import pytest
import requests
from flask import got_request_exception
from invenio_db import db
from invenio_files_rest.models import Bucket
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError

from oarepo_s3.audit import audit
from oarepo_s3.cleanup import expire_uploads
from oarepo_s3.ratelimit import BUDGETS

from ..helpers import random_bytes
from .app import create_rdm_app
from .conftest import _eager_celery

THREADS, OPERATIONS = 6, 25
KEYS = ("a.bin", "b.txt")
QUOTA = 7000
EXPIRY = timedelta(seconds=4)


@pytest.fixture(scope="module")
def app(app_config, database_uri):
    """The RDM app with uploads that expire within seconds; on SQLite every transaction is BEGIN IMMEDIATE."""
    config = {**app_config, "OAREPO_S3_MULTIPART_EXPIRES": EXPIRY,
              "OAREPO_S3_MULTIPART_MIN_EXPIRES": timedelta(seconds=1), "OAREPO_S3_CLEANUP_LOCK_TIMEOUT": 1,
              **{setting: None for setting in BUDGETS.values()}}
    app = create_rdm_app(config, name="oarepo_s3_rdm_concurrency", sqlite_immediate=True)
    previous = celery._state.default_app
    celery._state.set_default_app(_eager_celery())
    yield app
    celery._state.set_default_app(previous)


def _records_resources_race(exception: BaseException) -> bool:
    """True for the two races of records-resources' own code (see the module's text), whatever the storage.

    - ``ObjectDeletedError`` while one of its results (``services/*/results.py``) serializes a file row
      another request deleted after this one committed;
    - ``StaleDataError`` on the record's row: two requests changed the record (its files) from the same
      revision; the record's optimistic version counter refuses the second (nothing is lost).
    """
    chain = []
    while exception is not None and len(chain) < 10:
        chain.append(exception)
        exception = exception.__cause__ or exception.__context__
    for e in chain:
        frames = traceback.extract_tb(e.__traceback__)
        if isinstance(e, ObjectDeletedError) and any(
                "/invenio_records_resources/services/" in f.filename and f.filename.endswith("/results.py")
                for f in frames):
            return True
        if isinstance(e, StaleDataError) and "oarepo_s3_rdm_test_record" in str(e):
            return True
    return False


class Client:
    """One thread's random operations; every answer's status is counted."""

    def __init__(self, name: str, rdm, pid: str, rng: random.Random, statuses: Counter, failures: list):
        self.rdm, self.pid, self.rng, self.statuses, self.failures = rdm, pid, rng, statuses, failures
        self.keys = [f"{name}-{key}" for key in KEYS]
        self.http = requests.Session()

    def check(self, what: str, answer: requests.Response, allowed: set[int]) -> requests.Response:
        self.statuses[(what, answer.status_code)] += 1
        if answer.status_code not in allowed | {500}:  # (500s are checked against the server's exceptions)
            self.failures.append(f"{what}: {answer.status_code} {answer.text[:300]}")
        return answer

    def init(self, key: str) -> None:
        size = self.rng.randint(500, 3000)
        body = [{"key": key, "size": size, "transfer": {"type": "M", "parts": 1, "part_size": size}}]
        self.check("init", self.http.post(self.rdm.files_url(self.pid), json=body, timeout=60), {201, 400, 409})

    def upload_and_commit(self, key: str) -> None:
        answer = self.check("read", self.http.get(self.rdm.file_url(self.pid, key), timeout=60), {200, 404})
        if answer.status_code != 200 or answer.json().get("status") != "pending":
            return
        entry = answer.json()
        for part in entry["links"].get("parts", []):
            put = self.http.put(part["url"], data=random_bytes(entry["size"], seed=self.rng.randrange(1000)),
                                timeout=60)
            self.statuses[("put", put.status_code)] += 1
            if put.status_code >= 500 and put.status_code != 500:  # (moto answers 500 to parts of aborted uploads)
                self.failures.append(f"put: {put.status_code} {put.text[:300]}")
        self.check("commit", self.http.post(f"{self.rdm.file_url(self.pid, key)}/commit", timeout=60),
                   {200, 400, 404, 409, 410})

    def delete(self, key: str) -> None:
        self.check("delete", self.http.delete(self.rdm.file_url(self.pid, key), timeout=60), {204, 404, 409})

    def look(self, key: str) -> None:
        self.check("list", self.http.get(self.rdm.files_url(self.pid), timeout=60), {200})

    def run(self) -> None:
        operations = [self.init, self.init, self.upload_and_commit, self.upload_and_commit, self.delete, self.look]
        for _ in range(OPERATIONS):
            self.rng.choice(operations)(self.rng.choice(self.keys))


def test_the_books_hold_under_random_concurrent_rdm_operations(app, rdm, record):
    seed = int(os.environ.get("OAREPO_S3_RDM_SEED") or random.randrange(2**32))
    bucket = db.session.get(Bucket, record.bucket_id)
    bucket.quota_size = QUOTA
    db.session.commit()

    statuses: Counter = Counter()
    failures: list[str] = []
    done = threading.Event()
    clients = [Client(f"t{i}", rdm, record.pid, random.Random(seed + i), statuses, failures) for i in range(THREADS)]
    threads = [threading.Thread(target=c.run) for c in clients]

    def expiry() -> None:
        with app.app_context():
            while not done.is_set():
                try:
                    list(expire_uploads())
                except Exception as e:  # the cleanup must never fail, whatever the requests do
                    failures.append(f"expiry: {e!r}")
                finally:
                    db.session.remove()
                time.sleep(0.2)

    server_errors: list[tuple[bool, str]] = []

    def record(sender, exception, **extra) -> None:
        server_errors.append((_records_resources_race(exception), "".join(traceback.format_exception(exception))))

    got_request_exception.connect(record, app)
    expirer = threading.Thread(target=expiry)
    expirer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    expirer.join()
    got_request_exception.disconnect(record, app)

    context = f"seed {seed} (OAREPO_S3_RDM_SEED={seed}); statuses {sorted(statuses.items())}"
    assert failures == [], f"{context}\n" + "\n".join(failures)
    ours = [text for upstream, text in server_errors if not upstream]
    assert ours == [], f"{context}\n" + "\n".join(ours)
    app_500s = sum(n for (what, status), n in statuses.items() if status == 500 and what != "put")  # (put: S3's)
    assert app_500s == len(server_errors), context
    assert statuses[("commit", 200)] > 0 and statuses[("delete", 204)] > 0, context  # the mix did happen
    db.session.rollback()
    report = audit(grace=0)
    assert report.problems == [], f"{context}\n" + "\n".join(map(str, report.problems))
