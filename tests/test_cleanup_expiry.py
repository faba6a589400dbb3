"""Expiry of timed-out uploads (oarepo_s3.cleanup.expire_uploads), in-process."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from invenio_db import db
from invenio_files_rest.models import ObjectVersion

from oarepo_s3.api import MultipartUpload, MultipartUploadStatus
from oarepo_s3.cleanup import CleanupFailure, ExpiredUpload, expire_uploads, run_cleanup
from oarepo_s3.cli import oarepo_s3 as oarepo_s3_cli
from oarepo_s3.errors import InvalidUploadRequest
from oarepo_s3.models import MultipartUploadSession, utcnow
from oarepo_s3.signals import upload_expired

from .cleanup_helpers import backdate, complete_one, new_record, point_s3_at, s3_upload_ids, start_uploads, statuses
from .fault_proxy import FaultProxy

EXPIRED, IN_PROGRESS = MultipartUploadStatus.EXPIRED, MultipartUploadStatus.IN_PROGRESS


@pytest.fixture(scope="module")
def proxy(s3_server):
    p = FaultProxy(s3_server).start()
    yield p
    p.stop()


@pytest.fixture()
def s3_via(app, monkeypatch):
    """Point the app's control client somewhere else (the presigner keeps the real endpoint)."""
    return lambda endpoint_url, **overrides: point_s3_at(app, monkeypatch, endpoint_url, **overrides)


@pytest.fixture()
def received():
    """Every upload_expired signal sent during the test."""
    calls = []

    def receiver(sender, upload):
        calls.append(upload)

    upload_expired.connect(receiver)
    yield calls
    upload_expired.disconnect(receiver)


def test_expiry_gives_the_quota_back_and_the_previous_version_becomes_head_again(location):
    record = new_record()
    record.bucket.quota_size = 9000
    db.session.commit()
    _, v1_payload = complete_one(record, "a.bin", size=3000)
    v2 = MultipartUpload(key="a.bin", base_uri=None, expires=3600, size=5000, part_size=None)
    record.files["a.bin"] = v2  # a new version of a.bin, pending
    record.commit()
    db.session.commit()
    assert record.bucket.size == 8000
    assert str(ObjectVersion.get(record.bucket, "a.bin").multipart_upload.id) == v2.session["id"]
    with pytest.raises(InvalidUploadRequest, match="exceeds the bucket's limit"):
        record.files["b.bin"] = MultipartUpload(key="b.bin", base_uri=None, expires=3600, size=2000, part_size=None)
    db.session.rollback()
    backdate([v2.session["id"]])

    (done,) = expire_uploads()

    assert str(done.id) == v2.session["id"] and done.size == 5000
    db.session.rollback()
    assert record.bucket.size == 3000
    head = ObjectVersion.get(record.bucket, "a.bin")
    assert head.file.readable and head.file.size == 3000 and head.multipart_upload.status.value == "complete"
    with head.file.storage().open() as fp:
        assert fp.read() == v1_payload
    assert len(ObjectVersion.get_versions(record.bucket, "a.bin").all()) == 1
    # The reservation is given back: 3000 + 6000 fits the 9000 quota.
    record.files["b.bin"] = MultipartUpload(key="b.bin", base_uri=None, expires=3600, size=6000, part_size=None)
    db.session.commit()


def test_oldest_first_within_the_limit_and_nothing_twice(location, s3_client, s3_bucket):
    sessions = start_uploads(new_record(), 4)
    for hours, session in zip((4, 3, 2, 1), sessions, strict=True):
        row = db.session.get(MultipartUploadSession, session["id"])
        row.expires = utcnow() - timedelta(hours=hours)
    db.session.commit()

    first = list(expire_uploads(limit=2))
    assert [str(u.id) for u in first] == [sessions[0]["id"], sessions[1]["id"]]
    rest = list(expire_uploads())
    assert [str(u.id) for u in rest] == [sessions[2]["id"], sessions[3]["id"]]
    assert list(expire_uploads()) == []
    assert s3_upload_ids(s3_client, s3_bucket) == set()


def test_the_signal_is_sent_once_per_upload_after_the_commit(location, received):
    record = new_record()
    (session,) = start_uploads(record, 1)
    backdate([session["id"]])
    seen_in_db = []

    def check_committed(sender, upload):
        # A separate connection sees only committed data.
        with db.engine.connect() as other:
            seen_in_db.append(other.execute(
                sa.select(MultipartUploadSession.status).where(MultipartUploadSession.id == upload.id)
            ).scalar_one())

    upload_expired.connect(check_committed)
    try:
        report = run_cleanup(sweep=False)
    finally:
        upload_expired.disconnect(check_committed)

    assert report.expired == 1 and report.failures == 0
    (upload,) = received
    assert isinstance(upload, ExpiredUpload)
    assert (str(upload.id), upload.key, upload.upload_id, upload.size, upload.bucket_id) == (
        session["id"], session["file_key"], session["upload_id"], 1000, record.bucket.id)
    assert seen_in_db == [EXPIRED]


def test_a_failing_receiver_does_not_stop_the_cleanup(location, received):
    sessions = start_uploads(new_record(), 2)
    backdate([s["id"] for s in sessions])

    def broken(sender, upload):
        raise RuntimeError("receiver bug")

    upload_expired.connect(broken)
    try:
        assert run_cleanup(sweep=False).expired == 2
    finally:
        upload_expired.disconnect(broken)
    assert set(statuses().values()) == {EXPIRED}


def test_an_s3_refusal_leaves_that_upload_and_its_file_and_the_run_goes_on(
    location, proxy, s3_via, s3_client, s3_bucket
):
    record = new_record()
    sessions = start_uploads(record, 3)
    backdate([s["id"] for s in sessions])
    refused = sessions[0]
    s3_via(proxy.url)
    proxy.reset()
    proxy.add_fault("fail", "DELETE", upload_id=refused["upload_id"], times=None, status=403, code="AccessDenied")

    items = list(expire_uploads())

    failures = [i for i in items if isinstance(i, CleanupFailure)]
    assert len(failures) == 1 and "AccessDenied" in failures[0].error and not failures[0].unavailable
    assert statuses() == {refused["id"]: IN_PROGRESS, sessions[1]["id"]: EXPIRED, sessions[2]["id"]: EXPIRED}
    assert s3_upload_ids(s3_client, s3_bucket) == {refused["upload_id"]}
    assert ObjectVersion.get(record.bucket, refused["file_key"]).file is not None
    assert record.bucket.size == 1000
    assert len(proxy.aborts(refused["upload_id"])) == 1  # once per run: the cursor moved past it
    proxy.reset()


def test_unreachable_s3_stops_the_run_at_once_and_changes_nothing(location, s3_via):
    sessions = start_uploads(new_record(), 3)
    backdate([s["id"] for s in sessions])
    s3_via("http://127.0.0.1:9", OAREPO_S3_MAX_ATTEMPTS=1, OAREPO_S3_CONNECT_TIMEOUT=1)

    report = run_cleanup()

    assert (report.expired, report.failures, report.stopped) == (0, 1, True)
    assert set(statuses().values()) == {IN_PROGRESS}


def test_dry_run_changes_nothing(location, s3_client, s3_bucket, received):
    sessions = start_uploads(new_record(), 2)
    backdate([s["id"] for s in sessions])
    items = list(expire_uploads(dry_run=True))
    assert sorted(str(i.id) for i in items) == sorted(s["id"] for s in sessions)
    assert set(statuses().values()) == {IN_PROGRESS}
    assert len(s3_upload_ids(s3_client, s3_bucket)) == 2
    assert received == []


def test_a_session_claimed_elsewhere_is_never_handled_twice(location, received):
    """Another transaction holds the oldest session while the cleanup runs.

    PostgreSQL: it holds a row lock (FOR UPDATE); the cleanup skips the row
    (SKIP LOCKED) without waiting. SQLite: it holds the database write lock
    and expires the session itself; the cleanup's claim waits for that
    commit and then no longer sees the session as in progress.
    """
    sessions = start_uploads(new_record(), 3)
    backdate([s["id"] for s in sessions])
    oldest = sessions[0]
    table = MultipartUploadSession.__table__
    other = db.engine.connect()
    other_tx = other.begin()
    if db.engine.dialect.name == "postgresql":
        other.execute(sa.select(table.c.id).where(table.c.id == oldest["id"]).with_for_update())
        commit_after = None
    else:
        other.execute(table.update().where(table.c.id == oldest["id"]).values(status="expired"))
        commit_after = threading.Timer(0.3, other_tx.commit)
        commit_after.start()
    started = time.monotonic()
    try:
        done = [str(u.id) for u in expire_uploads()]
    finally:
        if commit_after is not None:
            commit_after.join()
        else:
            other_tx.rollback()
        other.close()

    assert done == [sessions[1]["id"], sessions[2]["id"]]
    assert [str(u.id) for u in received] == done
    if db.engine.dialect.name == "postgresql":
        assert time.monotonic() - started < 5  # skipped, not waited for
        assert statuses()[oldest["id"]] is IN_PROGRESS
        assert [str(u.id) for u in expire_uploads()] == [oldest["id"]]  # the next run takes it
    else:
        assert statuses()[oldest["id"]] is EXPIRED


def cleanup_record(session_id: str) -> tuple[int, str | None, object]:
    """``(attempts, last error, retry at)`` the cleanup recorded on a session, read afresh."""
    db.session.rollback()
    row = db.session.get(MultipartUploadSession, session_id)
    return row.cleanup_attempts, row.cleanup_error, row.cleanup_retry_at


def test_a_session_that_fails_every_time_is_recorded_backed_off_and_skipped(
    app, location, proxy, s3_via, s3_client, s3_bucket, monkeypatch
):
    monkeypatch.setitem(app.config, "OAREPO_S3_CLEANUP_RETRY_BACKOFF", timedelta(hours=1))
    record = new_record()
    sessions = start_uploads(record, 3)
    backdate([s["id"] for s in sessions])
    stuck = sessions[1]
    s3_via(proxy.url)
    proxy.reset()
    proxy.add_fault("fail", "DELETE", upload_id=stuck["upload_id"], times=None, status=403, code="AccessDenied")

    first = list(expire_uploads())
    failures = [i for i in first if isinstance(i, CleanupFailure)]
    assert [str(i.id) for i in first if isinstance(i, ExpiredUpload)] == [sessions[0]["id"], sessions[2]["id"]]
    assert len(failures) == 1 and failures[0].attempts == 1 and not failures[0].unavailable
    attempts, error, retry_at = cleanup_record(stuck["id"])
    assert attempts == 1 and "AccessDenied" in error and retry_at == failures[0].retry_at
    assert timedelta(minutes=59) < retry_at - utcnow() <= timedelta(hours=1)
    assert statuses()[stuck["id"]] is IN_PROGRESS and stuck["upload_id"] in s3_upload_ids(s3_client, s3_bucket)

    assert list(expire_uploads()) == []  # within its backoff: passed over, S3 not even asked
    assert len(proxy.aborts(stuck["upload_id"])) == 1

    later = list(expire_uploads(now=utcnow() + timedelta(hours=2)))  # the backoff has run out
    assert [(type(i), i.attempts) for i in later] == [(CleanupFailure, 2)]
    attempts, _, retry_at = cleanup_record(stuck["id"])
    assert attempts == 2 and timedelta(hours=1, minutes=59) < retry_at - utcnow() <= timedelta(hours=2)  # doubled

    listed = invoke_cli(app, "uploads", "list", "--failing")
    assert stuck["id"] in listed.output and "cleanup failed 2 times" in listed.output
    assert "AccessDenied" in listed.output and listed.output.strip().endswith("1 upload")

    proxy.reset()  # S3 lets it go now; an operator need not wait for the backoff
    forced = invoke_cli(app, "cleanup", "--retry-failed", "--no-sweep")
    assert forced.exit_code == 0, forced.output
    assert f"expired session {stuck['id']}" in forced.output
    assert statuses()[stuck["id"]] is EXPIRED and s3_upload_ids(s3_client, s3_bucket) == set()
    assert invoke_cli(app, "uploads", "list", "--failing").output.strip().endswith("0 uploads")


def test_any_failure_is_recorded_and_the_run_goes_on(app, location, monkeypatch, s3_client, s3_bucket):
    """Not only S3 errors: a bug or an inconsistency while expiring one upload must not stop the cleanup."""
    from oarepo_s3.service import terminate

    record = new_record()
    sessions = start_uploads(record, 3)
    backdate([s["id"] for s in sessions])
    broken = sessions[0]
    original = terminate._remove_pending_file

    def remove(row):
        if str(row.id) == broken["id"]:
            raise RuntimeError("the books are broken for this one")
        original(row)

    monkeypatch.setattr(terminate, "_remove_pending_file", remove)
    report = run_cleanup(sweep=False)

    assert (report.expired, report.failures, report.stopped) == (2, 1, False)
    attempts, error, _ = cleanup_record(broken["id"])
    assert attempts == 1 and error == "RuntimeError: the books are broken for this one"
    # Its transaction was rolled back: still in progress, file and quota reservation kept.
    assert statuses() == {broken["id"]: IN_PROGRESS, sessions[1]["id"]: EXPIRED, sessions[2]["id"]: EXPIRED}
    assert ObjectVersion.get(record.bucket, broken["file_key"]) is not None
    db.session.refresh(record.bucket)
    assert record.bucket.size == 1000



def invoke_cli(app, *args: str):
    return app.test_cli_runner().invoke(oarepo_s3_cli, list(args), catch_exceptions=False)


def test_a_pending_upload_of_a_published_bucket_is_expired_too(location, s3_client, s3_bucket):
    """Releases before the bucket lock could publish a record with an upload in progress; its expiry raised then."""
    record = new_record()
    (pending,) = start_uploads(record, 1)
    record.bucket.locked = True  # published meanwhile
    db.session.commit()
    backdate([pending["id"]])

    report = run_cleanup(sweep=False)

    assert (report.expired, report.failures) == (1, 0)
    assert statuses() == {pending["id"]: EXPIRED} and s3_upload_ids(s3_client, s3_bucket) == set()
    db.session.refresh(record.bucket)
    assert record.bucket.size == 0 and ObjectVersion.get(record.bucket, pending["file_key"]) is None
