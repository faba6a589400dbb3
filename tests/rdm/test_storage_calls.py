"""What invenio-records-resources 11.1.2 calls on our storage, and what the two leave in the database, step by step.

A record of the contract (calls logged by tests/rdm/trace.py): which
storage method records-resources calls when, with what, inside which of
its transactions, so that a change on either side shows up here. The
database state pinned after each step is the books our storage keeps for
it (the quota reservation, the pending file unreadable until commit).
"""

from __future__ import annotations

import hashlib

import pytest
from invenio_db import db as db_
from invenio_files_rest.models import Bucket, FileInstance, ObjectVersion

from ..helpers import fresh_random_bytes
from .conftest import MiB, put_parts
from .records import RdmFileMetadata
from .trace import StorageTrace

PART_SIZE = 5 * MiB
SIZE = 2 * PART_SIZE + 4321
KEY = "big.bin"


def _in_transaction() -> dict:
    """The server request's own view (its session, its uncommitted changes) at the moment of a storage call."""
    return {
        "file_records": db_.session.query(RdmFileMetadata).count(),
        "head_versions_with_file": db_.session.query(ObjectVersion)
        .filter(ObjectVersion.is_head.is_(True), ObjectVersion.file_id.isnot(None))
        .count(),
        "bucket_sizes": [b.size for b in db_.session.query(Bucket)],
    }


@pytest.fixture()
def trace(app, monkeypatch) -> StorageTrace:
    """Log every storage factory call and storage method call (the configured factory still does the work)."""
    state = app.extensions["invenio-files-rest"]
    recorder = StorageTrace(state.storage_factory, probe=_in_transaction)
    monkeypatch.setattr(state, "storage_factory", recorder)
    return recorder


@pytest.fixture()
def snapshot(db, record):
    """The rows a file upload touches, read in a fresh transaction (the live server commits in its own threads)."""

    def take() -> dict:
        db.session.commit()
        db.session.expire_all()
        return {
            "bucket_size": db.session.get(Bucket, record.bucket_id).size,
            "files": [
                {
                    "size": f.size,
                    "checksum": f.checksum,
                    "readable": f.readable,
                    "writable": f.writable,
                    "storage_class": f.storage_class,
                    "uri": f.uri,
                }
                for f in db.session.query(FileInstance)
            ],
            # (key, has a file, is head), head first
            "versions": sorted(
                ((o.key, o.file_id is not None, o.is_head) for o in db.session.query(ObjectVersion)),
                key=lambda v: (not v[2], v),
            ),
            "file_records": [r.json for r in db.session.query(RdmFileMetadata)],
        }

    return take


def _multipart_etag(payload: bytes, part_size: int) -> str:
    """S3's ETag of a completed multipart upload: md5 of the parts' md5s, then ``-<parts>``."""
    parts = [payload[i : i + part_size] for i in range(0, len(payload), part_size)]
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def test_multipart_lifecycle(rdm, record, trace, snapshot, s3_client, s3_bucket):
    payload = fresh_random_bytes(SIZE)
    assert snapshot()["bucket_size"] == 0

    trace.mark("init")
    init = rdm.init_multipart(record.pid, KEY, SIZE, PART_SIZE)
    assert init.status_code == 201, init.text
    (pending,) = init.json()["entries"]
    after_init = snapshot()

    trace.mark("list")
    assert rdm.list(record.pid).status_code == 200
    trace.mark("read")
    assert rdm.read(record.pid, KEY).status_code == 200
    trace.mark("content while pending")
    early = rdm.content(record.pid, KEY, follow=False)

    put_parts(pending, payload, PART_SIZE)

    trace.mark("commit")
    commit = rdm.commit(record.pid, KEY)
    assert commit.status_code == 200, commit.text
    after_commit = snapshot()

    trace.mark("read committed")
    assert rdm.read(record.pid, KEY).status_code == 200
    trace.mark("content")
    assert rdm.content(record.pid, KEY).content == payload

    trace.mark("delete committed")
    assert rdm.delete(record.pid, KEY).status_code == 204
    after_delete = snapshot()
    trace.mark("end")

    log = trace.dump()
    metadata = after_init["file_records"][0]["transfer"]["multipart_metadata"]

    # init: the storage of a brand-new FileInstance (no uri yet), then the answer's part links.
    assert trace.calls("init") == [
        "factory:FileInstance",
        "multipart_initialize_upload",
        "factory:File",
        "multipart_links",
    ], log
    assert trace.steps()["init"][0].detail["kwargs"] == {
        "default_location": f"s3://{s3_bucket}",
        "default_storage_class": None,
    }
    assert trace.read_attributes("init")[:4] == ["size", "updated", "uri", "id"], log  # id: no uri yet, make_path
    assert trace.only("init", "call", "multipart_initialize_upload").detail["args"] == [3, SIZE, PART_SIZE]
    assert metadata == {"uploadId": metadata["uploadId"], "session_id": metadata["session_id"], "parts": 3,
                        "part_size": PART_SIZE, "size": SIZE}
    assert trace.only("init", "call", "multipart_links").detail["kwargs"] == metadata

    # Every serialization of a pending "M" file presigns its parts again, on a File wrapper's storage.
    for step in ("list", "read"):
        assert trace.calls(step) == ["factory:File", "multipart_links"], log
        assert trace.only(step, "call", "multipart_links").detail["kwargs"] == metadata
        assert trace.read_attributes(step) == ["size", "updated", "uri", "uri"], log

    # records-resources serves a pending file's content through the storage: ours refuses it (409).
    assert trace.calls("content while pending") == ["factory:FileInstance", "send_file"], log
    assert early.status_code == 409, early.text

    # commit: complete on S3 (File wrapper), then the checksum task (eager here) reads the whole object.
    assert trace.calls("commit") == ["factory:File", "multipart_commit_upload", "factory:FileInstance", "open"], log
    completed = trace.only("commit", "call", "multipart_commit_upload")
    assert completed.detail["kwargs"] == metadata
    # the S3 ETag, which becomes the checksum "multipart:<etag>-<part_size>" until the task replaces it
    assert completed.detail["returned"] == _multipart_etag(payload, PART_SIZE)
    assert trace.calls("read committed") == []  # an "L" file has no transfer links
    assert trace.calls("content") == ["factory:FileInstance", "send_file"], log
    assert trace.only("content", "call", "send_file").detail["kwargs"]["checksum"] == (
        "md5:" + hashlib.md5(payload).hexdigest()
    )
    assert trace.calls("delete committed") == [], log  # nothing deletes the S3 object

    # Database after init: records-resources' set_uri (after our init) leaves the FileInstance readable (the
    # storage refuses its content while the upload is in progress, above); the bucket reserves the declared size.
    (file_at_init,) = after_init["files"]
    assert file_at_init == {
        "size": SIZE,
        "checksum": None,
        "readable": True,
        "writable": False,
        "storage_class": "S",
        "uri": file_at_init["uri"],
    }
    assert file_at_init["uri"].startswith(f"s3://{s3_bucket}/")
    assert after_init["bucket_size"] == SIZE
    assert after_init["versions"] == [(KEY, True, True)]
    assert after_init["file_records"][0]["size"] == SIZE
    assert after_init["file_records"][0]["transfer"]["type"] == "M"

    # After commit: md5 checksum (the task ran), type "L", the multipart metadata kept; the reservation is the file.
    (file_at_commit,) = after_commit["files"]
    assert file_at_commit["checksum"] == "md5:" + hashlib.md5(payload).hexdigest()
    assert file_at_commit["size"] == SIZE
    assert after_commit["file_records"][0]["transfer"] == {
        "type": "L",
        "parts": 3,
        "part_size": PART_SIZE,
        "multipart_metadata": metadata,
    }
    assert after_commit["bucket_size"] == SIZE

    # After deleting the committed file: row gone, version soft-deleted (files-rest keeps the FileInstance and
    # its S3 object for that version), and the size given back.
    assert after_delete["file_records"] == []
    assert after_delete["versions"] == [(KEY, False, True), (KEY, True, False)]
    assert after_delete["files"] == [file_at_commit]
    assert after_delete["bucket_size"] == 0
    assert [o["Size"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [SIZE]


def test_delete_pending(rdm, record, trace, snapshot, s3_client, s3_bucket):
    init = rdm.init_multipart(record.pid, KEY, SIZE, PART_SIZE)
    assert init.status_code == 201, init.text
    after_init = snapshot()
    metadata = after_init["file_records"][0]["transfer"]["multipart_metadata"]

    trace.mark("delete pending")
    assert rdm.delete(record.pid, KEY).status_code == 204
    after_delete = snapshot()
    trace.mark("end")
    log = trace.dump()

    # The abort runs on a File wrapper's storage, after the database changes (in the same, uncommitted
    # transaction): file record row deleted, version soft-deleted, the reservation given back.
    assert trace.calls("delete pending") == ["factory:File", "multipart_abort_upload"], log
    abort = trace.only("delete pending", "call", "multipart_abort_upload")
    assert abort.detail["kwargs"] == metadata
    assert abort.detail["probe"] == {"file_records": 0, "head_versions_with_file": 0, "bucket_sizes": [0]}, log

    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert after_delete["file_records"] == []
    assert after_delete["versions"] == [(KEY, False, True), (KEY, True, False)]
    (file_after_delete,) = after_delete["files"]  # kept by files-rest for the deleted version, never readable
    assert file_after_delete == {**after_init["files"][0], "readable": False}
    assert after_delete["bucket_size"] == 0
