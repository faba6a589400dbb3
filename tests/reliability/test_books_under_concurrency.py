"""Books that hold under any concurrency: random mixes of every operation, many threads, real HTTP.

Eight client threads do random operations on three drafts with a quota, all
at once, through the REST and Uppy routes of a live server: start (and
empty files), upload and complete, complete too early, abort, delete,
publish (and new drafts), while other threads run the expiry (uploads
expire within seconds here) and the orphan sweep. Keys collide on purpose.

Whatever happened, at the end :func:`oarepo_s3.audit.audit` finds no
problem with no grace at all: every bucket's size is the sum of its files
and reservations, no quota is exceeded, no published record has a pending
file, and every S3 object and upload belongs to the books (and the
reverse). A monitor reads the bucket sizes all along: no quota is ever
exceeded, not even for a moment. No request answers 5xx.

The seed of a run is in its failure message (``OAREPO_S3_BOOKS_SEED`` repeats it).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa
from invenio_db import db
from invenio_files_rest.models import Bucket

from oarepo_s3.app import create_app
from oarepo_s3.audit import audit
from oarepo_s3.cleanup import expire_uploads, sweep_orphans
from oarepo_s3.ratelimit import BUDGETS

from ..helpers import random_bytes

KiB = 1024
THREADS, OPERATIONS = 8, int(os.environ.get("OAREPO_S3_BOOKS_OPERATIONS", "40"))
DRAFTS, QUOTA = 3, 600 * KiB
KEYS = ("a.bin", "b.bin", "c.txt", "d/e.bin", "f.bin")
EXPIRY = timedelta(seconds=6)


@pytest.fixture(scope="module")
def app_config(app_config, database_uri):
    """Uploads expire within seconds (the expiry races everything else); no rate limit in the way."""
    return {**app_config, "OAREPO_S3_MULTIPART_EXPIRES": EXPIRY,
            "OAREPO_S3_MULTIPART_MIN_EXPIRES": timedelta(seconds=1), "OAREPO_S3_CLEANUP_LOCK_TIMEOUT": 1,
            **{setting: None for setting in BUDGETS.values()}}


@pytest.fixture(scope="module")
def app(app_config):
    """The API app as a server runs it: on SQLite every transaction is BEGIN IMMEDIATE (writers wait, not fail)."""
    yield create_app(app_config, sqlite_immediate=True)


class Client:
    """One client thread: random operations over HTTP, every answer counted; 5xx kept aside."""

    def __init__(self, app, owner, api_url: str, drafts: list[dict], lock: threading.Lock, rng: random.Random):
        self.app = app
        self.api = owner.api()
        self.api_url, self.drafts, self.lock, self.rng = api_url, drafts, lock, rng
        self.seen: Counter = Counter()
        self.server_errors: list[str] = []

    def call(self, name: str, method: str, url: str, **kwargs) -> requests.Response:
        r = self.api.request(method, url, timeout=60, **kwargs)
        self.seen[(name, r.status_code)] += 1
        if r.status_code >= 500:
            self.server_errors.append(f"{name} {method} {url}: {r.status_code} {r.text[:300]}")
        return r

    def draft(self) -> tuple[int, dict]:
        with self.lock:
            i = self.rng.randrange(len(self.drafts))
            return i, self.drafts[i]

    def files(self, draft: dict) -> list[dict]:
        r = self.call("list", "GET", draft["links"]["files"])
        return r.json()["entries"] if r.status_code == 200 else []

    def step(self) -> None:
        operation = self.rng.choices(
            ["start", "uppy", "finish", "early", "abort", "delete", "publish"], [30, 8, 30, 5, 8, 10, 2])[0]
        i, draft = self.draft()
        getattr(self, operation)(i, draft)

    def start(self, i: int, draft: dict) -> None:
        size = self.rng.choice([0, 1, 500, 20 * KiB, 90 * KiB, 180 * KiB, 250 * KiB])
        body = {"key": self.rng.choice(KEYS), "size": size}
        self.call("start", "POST", f"{draft['links']['files']}?multipart=True", json=body)

    def uppy(self, i: int, draft: dict) -> None:
        body = {"filename": self.rng.choice(KEYS), "type": "application/octet-stream",
                "metadata": {"size": self.rng.choice([10, 60 * KiB, 140 * KiB])}}
        self.call("uppy", "POST", f"{draft['links']['uppy']}/s3/multipart", json=body)

    def pending(self, draft: dict) -> dict | None:
        files = [f for f in self.files(draft) if f["status"] == "pending"]
        return self.rng.choice(files) if files else None

    def finish(self, i: int, draft: dict) -> None:
        file = self.pending(draft)
        if file is None:
            return
        signed = self.call("sign", "POST", file["links"]["sign"], json={"parts": [1]})
        if signed.status_code != 200:
            return
        put = requests.put(signed.json()["parts"][0]["url"], data=random_bytes(file["size"], seed=file["size"]),
                           timeout=60)
        self.seen[("put", put.status_code)] += 1
        self.call("complete", "POST", file["links"]["complete"], json={})

    def early(self, i: int, draft: dict) -> None:
        file = self.pending(draft)
        if file is not None:  # no part uploaded yet: 400 naming the missing part, the upload stays
            self.call("early", "POST", file["links"]["complete"], json={})

    def abort(self, i: int, draft: dict) -> None:
        file = self.pending(draft)
        if file is not None:
            self.call("abort", "POST", file["links"]["abort"])

    def delete(self, i: int, draft: dict) -> None:
        files = self.files(draft)
        if files:
            self.call("delete", "DELETE", self.rng.choice(files)["links"]["self"])

    def publish(self, i: int, draft: dict) -> None:
        if self.call("publish", "POST", draft["links"]["publish"]).status_code != 200:
            return
        fresh = self.call("draft", "POST", f"{self.api_url}/", json={"metadata": {"title": "next"}})
        if fresh.status_code == 201:
            with self.app.app_context():
                set_quota(fresh.json()["id"])
            with self.lock:
                self.drafts[i] = fresh.json()


def set_quota(pid_value: str) -> None:
    """Give a draft's bucket the test's quota (in a transaction of its own)."""
    from oarepo_s3.drafts import resolve

    try:
        resolve(pid_value).bucket.quota_size = QUOTA
        db.session.commit()
    finally:
        db.session.remove()


def background(app, stop: threading.Event, interval: float, work) -> threading.Thread:
    """Run ``work()`` in an app context every ``interval`` seconds until ``stop``; errors are kept."""
    errors: list[BaseException] = []

    def loop() -> None:
        with app.app_context():
            while not stop.wait(interval):
                try:
                    work()
                except BaseException as e:  # kept and reported by the test
                    errors.append(e)
                    return
                finally:
                    db.session.remove()

    thread = threading.Thread(target=loop, daemon=True)
    thread.errors = errors
    thread.start()
    return thread


@pytest.mark.slow
def test_the_books_hold_under_random_concurrent_operations(app, owner, api_url, live_server, figures):
    seed = int(os.environ.get("OAREPO_S3_BOOKS_SEED") or random.SystemRandom().randrange(2**32))
    db.session.commit()  # hold no transaction: on SQLite (BEGIN IMMEDIATE) it would hold the write lock
    drafts = []
    for _ in range(DRAFTS):
        created = owner.api().post(f"{api_url}/", json={"metadata": {"title": "race"}}, timeout=30)
        assert created.status_code == 201, created.text
        set_quota(created.json()["id"])
        drafts.append(created.json())
    lock, stop = threading.Lock(), threading.Event()
    clients = [Client(app, owner, api_url, drafts, lock, random.Random(seed + n)) for n in range(THREADS)]
    over_quota: list[tuple[str, int, int]] = []

    def watch_quota() -> None:
        with db.engine.connect() as connection:
            rows = connection.execute(sa.select(Bucket.id, Bucket.size, Bucket.quota_size)).all()
        over_quota.extend((str(b), size, quota) for b, size, quota in rows if quota is not None and size > quota)

    helpers = [
        background(app, stop, 0.7, lambda: list(expire_uploads())),
        background(app, stop, 0.9, lambda: list(expire_uploads())),  # two cleanup workers at once
        background(app, stop, 2.0, lambda: list(sweep_orphans(grace=timedelta(hours=1)))),
        background(app, stop, 0.02, watch_quota),
    ]

    def run(client: Client) -> None:
        for _ in range(OPERATIONS):
            client.step()

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    stop.set()
    for h in helpers:
        h.join(timeout=60)
    time.sleep(EXPIRY.total_seconds() + 0.5)  # let every upload left in progress expire, then clean up
    list(expire_uploads())
    db.session.commit()

    seen = sum((c.seen for c in clients), Counter())
    where = f"seed {seed}, answers {dict(sorted(seen.items()))}"
    assert [e for c in clients for e in c.server_errors] == [], where
    assert [e for h in helpers for e in h.errors] == [], where
    assert all(not t.is_alive() for t in threads), where
    assert over_quota == [], where
    report = audit(grace=timedelta(0))
    figures["books"] = {
        "threads": THREADS, "operations": THREADS * OPERATIONS, "drafts": DRAFTS, "quota": QUOTA, "seed": seed,
        "answers": {f"{name} {status}": n for (name, status), n in sorted(seen.items())},
        "sessions": report.sessions, "problems": [str(p) for p in report.problems],
        "over_quota_seen": len(over_quota), "server_errors": sum(len(c.server_errors) for c in clients),
    }
    assert [str(p) for p in report.problems] == [], where
    assert report.sessions > 0 and seen[("complete", 200)] > 0 and seen[("start", 201)] > 0, where
    db.session.commit()


def test_audit_names_what_disagrees(app, owner, api_url, live_server, s3_client, s3_bucket):
    """The audit is not vacuous: break the books and S3 by hand, and each break is named."""
    db.session.commit()  # hold no transaction: on SQLite (BEGIN IMMEDIATE) it would hold the write lock
    created = owner.api().post(f"{api_url}/", json={"metadata": {}}, timeout=30).json()
    api = owner.api()
    done = api.post(f"{created['links']['files']}?multipart=True", json={"key": "x.bin", "size": 10}, timeout=30)
    url = done.json()["multipart_upload"]["parts_url"][0]
    assert requests.put(url, data=b"0123456789", timeout=30).status_code == 200
    assert api.post(done.json()["links"]["complete"], timeout=30).status_code == 200
    pending = api.post(f"{created['links']['files']}?multipart=True", json={"key": "y.bin", "size": 10}, timeout=30)
    assert audit(grace=timedelta(0)).problems == []
    db.session.commit()

    from oarepo_s3.drafts import resolve

    record = resolve(created["id"])
    record.bucket.size += 1  # a lost update
    db.session.commit()
    complete_key = next(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    s3_client.delete_object(Bucket=s3_bucket, Key=complete_key)  # the data of a readable file gone
    s3_client.put_object(Bucket=s3_bucket, Key="ab/cd/ef01-2345-6789-abcd-ef0123456789/data", Body=b"?")
    pending_upload = pending.json()["multipart_upload"]
    s3_client.abort_multipart_upload(Bucket=s3_bucket, Key=pending_upload["key"], UploadId=pending_upload["upload_id"])

    kinds = sorted(p.kind for p in audit(grace=timedelta(0)).problems)
    assert kinds == ["bucket-size", "object-missing", "orphan-object", "upload-missing"]
    db.session.commit()
