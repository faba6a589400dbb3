"""The orphan sweep (oarepo_s3.cleanup.sweep_orphans): S3 uploads the database does not stand for."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from invenio_db import db
from invenio_files_rest.helpers import make_path
from invenio_files_rest.models import Location
from sqlalchemy import event

from oarepo_s3.api import MultipartUploadStatus
from oarepo_s3.cleanup import CleanupFailure, OrphanUpload, file_key_matcher, run_cleanup, sweep_orphans
from oarepo_s3.models import MultipartUploadSession, utcnow
from oarepo_s3.proxies import current_oarepo_s3
from oarepo_s3.s3 import PendingUpload

from .cleanup_helpers import complete_one, new_record, s3_upload_ids, start_uploads, statuses


def files_rest_key(prefix: str = "") -> str:
    """A key exactly as files-rest makes them for a new FileInstance."""
    return make_path(prefix, str(uuid.uuid4()), "data", 2, 2).lstrip("/")


def create(s3_client, bucket: str, key: str) -> str:
    return s3_client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]


def test_the_key_shape_is_exactly_files_rests():
    ours = file_key_matcher("", 2, 2)
    key = files_rest_key()
    assert ours(key)
    rest = key[len("ab/cd/"):-len("/data")]
    head = key[:6]
    for foreign in (
        "other/file.bin",
        f"{key}.bak",
        f"x/{key}",
        key.upper(),
        f"{head}{rest}/data/more",
        f"{key[:2]}/{key[3:5]}{key[6:8]}/{key[8:]}",  # split differently
        f"{head}{rest.replace('-', '')}/data",  # not a canonical uuid
        f"{head}{rest[:-1]}g/data",
        f"{head}{rest}/DATA",
        "ab/cd/data",
    ):
        assert not ours(foreign), foreign
    under = file_key_matcher("some/prefix/", 2, 2)
    assert under(f"some/prefix/{key}") and not under(key)
    assert file_key_matcher("", 3, 1)(make_path("", str(uuid.uuid4()), "data", 3, 1).lstrip("/"))


def test_only_our_uploads_unknown_to_the_database_are_aborted(location, s3_client, s3_bucket):
    db.session.add(Location(name="local", uri="file:///tmp/not-s3", default=False))
    db.session.commit()
    record = new_record()
    (live,) = start_uploads(record, 1, prefix="live")
    complete_one(record, "done.bin", size=1000)
    (left,) = start_uploads(record, 1, prefix="left")
    # Expired, but S3 still lists its upload (its abort did not happen, or a listing taken a moment
    # before it): aborted again, which is harmless.
    row = db.session.get(MultipartUploadSession, left["id"])
    row.status = MultipartUploadStatus.EXPIRED
    db.session.commit()
    unknown_key = files_rest_key()
    unknown = create(s3_client, s3_bucket, unknown_key)
    foreign = {create(s3_client, s3_bucket, key) for key in (
        "other/file.bin", f"{files_rest_key()}.bak", f"x/{files_rest_key()}", files_rest_key().upper())}

    items = sorted(sweep_orphans(grace=0), key=lambda item: item.upload_id != unknown)

    assert [(item.upload_id, item.aborted) for item in items] == [(unknown, True), (left["upload_id"], True)]
    assert items[0].s3_key == unknown_key
    assert s3_upload_ids(s3_client, s3_bucket) == foreign | {live["upload_id"]}
    assert statuses()[live["id"]] is MultipartUploadStatus.IN_PROGRESS


@pytest.fixture()
def true_initiated(monkeypatch):
    """Report the time an upload really started: moto answers ListMultipartUploads with a
    fixed ``Initiated`` (2010-11-10), which would make every upload look ancient."""
    s3 = current_oarepo_s3.s3
    started: dict[str, object] = {}
    listing = s3.list_multipart_uploads

    def list_multipart_uploads(bucket, prefix=""):
        for upload in listing(bucket, prefix):
            yield PendingUpload(upload.key, upload.upload_id, started.get(upload.upload_id, upload.initiated))

    monkeypatch.setattr(s3, "list_multipart_uploads", list_multipart_uploads)
    return started


def test_the_grace_period_protects_young_uploads(location, s3_client, s3_bucket, true_initiated):
    orphan = create(s3_client, s3_bucket, files_rest_key())
    true_initiated[orphan] = utcnow()
    assert list(sweep_orphans(grace=timedelta(hours=1))) == []
    assert list(sweep_orphans()) == []  # default OAREPO_S3_ORPHAN_GRACE: 24 hours
    (item,) = sweep_orphans(grace=timedelta(hours=1), now=utcnow() + timedelta(hours=2))
    assert item.upload_id == orphan and item.aborted
    assert s3_upload_ids(s3_client, s3_bucket) == set()


def test_a_location_with_a_path_sweeps_only_under_it(db, s3_client, s3_bucket):
    db.session.add(Location(name="sub", uri=f"s3://{s3_bucket}/some/prefix", default=True))
    db.session.add(Location(name="sub-again", uri=f"s3://{s3_bucket}/some/prefix/", default=False))
    db.session.commit()
    inside = create(s3_client, s3_bucket, files_rest_key("some/prefix"))
    outside = create(s3_client, s3_bucket, files_rest_key())
    other_prefix = create(s3_client, s3_bucket, files_rest_key("some/other"))

    items = list(sweep_orphans(grace=0))

    assert [i.upload_id for i in items] == [inside]  # once, though two locations name the place
    assert s3_upload_ids(s3_client, s3_bucket) == {outside, other_prefix}


def test_database_lookups_are_batched(location, s3_client, s3_bucket):
    orphans = {create(s3_client, s3_bucket, files_rest_key()) for _ in range(5)}
    lookups = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if "oarepo_s3_multipart_upload" in statement and "upload_id IN" in statement:
            lookups.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        items = list(sweep_orphans(grace=0, lookup_batch=2))
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert {i.upload_id for i in items} == orphans
    assert len(lookups) == 3  # 2 + 2 + 1


def test_dry_run_aborts_nothing(location, s3_client, s3_bucket):
    orphan = create(s3_client, s3_bucket, files_rest_key())
    (item,) = sweep_orphans(grace=0, dry_run=True)
    assert (item.upload_id, item.aborted) == (orphan, False)
    assert s3_upload_ids(s3_client, s3_bucket) == {orphan}


def test_a_missing_bucket_is_reported_and_the_others_are_swept(location, s3_client, s3_bucket):
    db.session.add(Location(name="gone", uri="s3://no-such-bucket-oarepo-s3", default=False))
    db.session.commit()
    orphan = create(s3_client, s3_bucket, files_rest_key())
    items = list(sweep_orphans(grace=0))
    failures = [i for i in items if isinstance(i, CleanupFailure)]
    assert len(failures) == 1 and "NoSuchBucket" in failures[0].error
    assert [i.upload_id for i in items if isinstance(i, OrphanUpload)] == [orphan]


@pytest.mark.parametrize("switch", [True, False])
def test_the_cleanup_sweeps_when_the_config_says_so(app, location, s3_client, s3_bucket, monkeypatch, switch):
    monkeypatch.setitem(app.config, "OAREPO_S3_ORPHAN_SWEEP", switch)
    monkeypatch.setitem(app.config, "OAREPO_S3_ORPHAN_GRACE", 0)  # seconds, as from the environment
    orphan = create(s3_client, s3_bucket, files_rest_key())
    report = run_cleanup()
    assert report.orphans == (1 if switch else 0)
    assert (orphan in s3_upload_ids(s3_client, s3_bucket)) is not switch
