"""records-resources' multipart transfer ("M") over real HTTP, on our storage, end to end.

The FileResource and FileService are invenio-records-resources' own; the
storage is ``oarepo_s3.storage.s3_storage_factory``. Parts go from the
client straight to S3 on the presigned ``links.parts[*].url``; the server
only initialises, lists, commits, aborts and redirects. After every
scenario the audit (``invenio oarepo-s3 audit``) finds the books and S3 in
agreement.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from invenio_db import db
from invenio_files_rest.models import Bucket, ObjectVersion

from oarepo_s3.audit import audit
from oarepo_s3.cleanup import sweep_orphans
from oarepo_s3.cli import oarepo_s3 as oarepo_s3_cli
from oarepo_s3.models import MultipartUploadSession, MultipartUploadStatus, utcnow
from oarepo_s3.proxies import current_oarepo_s3
from oarepo_s3.tasks import cleanup_expired_multipart_uploads

from ..helpers import fresh_random_bytes
from .conftest import MiB, put_parts

PART_SIZE = 5 * MiB  # S3's minimum part size
SIZE = 2 * PART_SIZE + 123_457  # two full parts and a tail
KEY = "table.csv"


def _entry(files: dict, key: str = KEY) -> dict:
    (entry,) = [e for e in files["entries"] if e["key"] == key]
    return entry


def _init(rdm, record, size: int = SIZE, part_size: int | None = PART_SIZE, key: str = KEY) -> dict:
    answer = (rdm.init_multipart(record.pid, key, size, part_size) if part_size
              else rdm.init(record.pid, [{"key": key, "size": size, "transfer": {"type": "M", "parts": 3}}]))
    assert answer.status_code == 201, answer.text
    return _entry(answer.json(), key)


def _session() -> MultipartUploadSession:
    db.session.rollback()
    (row,) = db.session.query(MultipartUploadSession).all()
    return row


def _storage_of_the_upload(app):
    """The storage records-resources gets for the upload's file from the configured factory (in a request)."""
    fileinstance = db.session.get(ObjectVersion, _session().version_id).file
    return app.extensions["invenio-files-rest"].storage_factory(fileinstance=fileinstance)


def _books_and_s3_agree() -> None:
    db.session.rollback()
    report = audit(grace=0)
    assert report.problems == [], "\n".join(map(str, report.problems))


def _bucket_size(record) -> int:
    db.session.rollback()
    return db.session.get(Bucket, record.bucket_id).size


def _uploads_in_s3(s3_client, bucket: str) -> list[dict]:
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _s3etag(payload: bytes, part_size: int) -> str:
    parts = [payload[i : i + part_size] for i in range(0, len(payload), part_size)]
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def test_upload_commit_download(rdm, record, s3_server, s3_client, s3_bucket, app):
    payload = fresh_random_bytes(SIZE)
    pending = _init(rdm, record)
    assert (pending["transfer"]["type"], pending["status"]) == ("M", "pending")
    parts = pending["links"]["parts"]
    assert [p["part"] for p in parts] == [1, 2, 3]
    assert all(urlsplit(p["url"]).netloc == urlsplit(s3_server).netloc for p in parts)
    # short-lived links (OAREPO_S3_TRANSFER_LINK_EXPIRATION), each part's length signed in
    query = parse_qs(urlsplit(parts[0]["url"]).query)
    assert query["X-Amz-Expires"] == ["3600"]
    assert query["X-Amz-SignedHeaders"] == ["content-length;host"]
    assert "content" not in pending["links"]
    assert _bucket_size(record) == SIZE  # the declared size is reserved against the quota at once
    _books_and_s3_agree()

    # The content of a pending file is refused (records-resources would redirect to an object not there yet).
    early = rdm.content(record.pid, KEY, follow=False)
    assert early.status_code == 409, early.text

    put_parts(pending, payload, PART_SIZE)
    commit = rdm.commit(record.pid, KEY)
    assert commit.status_code == 200, commit.text
    committed = commit.json()
    assert (committed["transfer"]["type"], committed["status"], committed["size"]) == ("L", "completed", SIZE)
    # records-resources' checksum task (eager here) turned the ETag we answered into the file's MD5
    assert committed["checksum"] == "md5:" + hashlib.md5(payload).hexdigest()
    assert "parts" not in committed["links"]

    download = rdm.content(record.pid, KEY)
    assert download.status_code == 200, download.text
    (redirect,) = download.history
    assert redirect.status_code == 302
    assert urlsplit(redirect.headers["Location"]).netloc == urlsplit(s3_server).netloc
    assert download.content == payload

    (obj,) = s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    head = s3_client.head_object(Bucket=s3_bucket, Key=obj["Key"])
    assert (head["ContentLength"], head["ContentType"]) == (SIZE, "text/csv")  # the file's type, set at init
    assert _uploads_in_s3(s3_client, s3_bucket) == []
    assert _session().status is MultipartUploadStatus.COMPLETE
    assert _bucket_size(record) == SIZE
    _books_and_s3_agree()

    # Committing again is harmless: records-resources answers for the committed file, and our storage's
    # commit, called again with the same metadata, answers the same ETag without touching S3.
    again = rdm.commit(record.pid, KEY)
    assert (again.status_code, again.json()["checksum"]) == (200, committed["checksum"]), again.text
    with app.test_request_context():
        etag = _storage_of_the_upload(app).multipart_commit_upload(**_session_metadata(rdm, record))
        assert etag == _s3etag(payload, PART_SIZE)
        db.session.rollback()  # (the caller's transaction: records-resources would commit it)
    assert rdm.content(record.pid, KEY).content == payload

    assert rdm.delete(record.pid, KEY).status_code == 204
    assert _bucket_size(record) == 0
    _books_and_s3_agree()


def test_list_parts_link_lets_a_client_resume_without_the_server(rdm, record):
    payload = fresh_random_bytes(SIZE)
    pending = _init(rdm, record)
    (list_parts,) = pending["links"]["list_parts"]
    put_parts({"links": {"parts": pending["links"]["parts"][1:2]}}, payload, PART_SIZE)  # part 2 only

    answer = requests.get(list_parts, timeout=60)
    assert answer.status_code == 200, answer.text
    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    listed = [(int(p.findtext("s3:PartNumber", namespaces=ns)), int(p.findtext("s3:Size", namespaces=ns)))
              for p in ET.fromstring(answer.content).iterfind("s3:Part", ns)]
    assert listed == [(2, PART_SIZE)]


def test_commit_refuses_missing_parts_and_the_upload_stays_resumable(rdm, record, s3_client, s3_bucket):
    size = 3 * PART_SIZE + 2  # parts of ceil(size / 3) = 5 MiB + 1 bytes, the last one 5 MiB
    payload = fresh_random_bytes(size)
    pending = _init(rdm, record, size=size, part_size=None)  # no part_size: ceil(size / parts)
    part_size = PART_SIZE + 1
    row = _session()
    assert (row.num_parts, row.part_size) == (3, part_size)
    parts = pending["links"]["parts"]
    put_parts({"links": {"parts": [parts[0], parts[2]]}}, payload, part_size)  # part 2 missing

    refused = rdm.commit(record.pid, KEY)
    assert refused.status_code == 400, refused.text
    assert "parts 2 are not in S3" in refused.json()["message"], refused.text
    again = rdm.read(record.pid, KEY).json()
    assert again["status"] == "pending" and len(again["links"]["parts"]) == 3  # still resumable, freshly signed
    assert _session().status is MultipartUploadStatus.IN_PROGRESS
    assert len(_uploads_in_s3(s3_client, s3_bucket)) == 1
    _books_and_s3_agree()

    put_parts({"links": {"parts": [again["links"]["parts"][1]]}}, payload, part_size)
    commit = rdm.commit(record.pid, KEY)
    assert commit.status_code == 200, commit.text
    assert rdm.content(record.pid, KEY).content == payload
    _books_and_s3_agree()


def test_delete_pending_file_aborts_the_s3_upload(rdm, record, s3_client, s3_bucket):
    payload = fresh_random_bytes(SIZE)
    pending = _init(rdm, record)
    put_parts({"links": {"parts": pending["links"]["parts"][:1]}}, payload, PART_SIZE)  # one part uploaded
    assert len(_uploads_in_s3(s3_client, s3_bucket)) == 1

    deleted = rdm.delete(record.pid, KEY)
    assert deleted.status_code == 204, deleted.text

    assert rdm.list(record.pid).json()["entries"] == []
    assert rdm.read(record.pid, KEY).status_code == 404
    assert _uploads_in_s3(s3_client, s3_bucket) == []  # aborted in S3
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []
    assert _session().status is MultipartUploadStatus.ABORTED
    assert _bucket_size(record) == 0
    _books_and_s3_agree()

    # The key is free again, for a new upload.
    _init(rdm, record)
    _books_and_s3_agree()


def test_expired_upload_is_cleaned_up_and_its_file_can_be_deleted(rdm, record, s3_client, s3_bucket):
    payload = fresh_random_bytes(SIZE)
    pending = _init(rdm, record)
    put_parts({"links": {"parts": pending["links"]["parts"][:2]}}, payload, PART_SIZE)
    row = _session()
    row.expires = utcnow() - timedelta(minutes=1)
    db.session.commit()

    assert cleanup_expired_multipart_uploads() == 1  # the Celery task, called in this thread
    assert _session().status is MultipartUploadStatus.EXPIRED
    assert _uploads_in_s3(s3_client, s3_bucket) == []  # the abandoned upload no longer costs storage

    # The file record stays records-resources' (a draft's file list is its business): no links, no content,
    # and its commit says why.
    expired = rdm.read(record.pid, KEY)
    assert expired.status_code == 200, expired.text
    assert expired.json()["links"]["parts"] == []
    gone = rdm.content(record.pid, KEY, follow=False)  # records-resources refuses an unreadable file itself
    assert gone.status_code == 400 and "not available" in gone.text, gone.text
    refused = rdm.commit(record.pid, KEY)
    assert refused.status_code in (409, 410), refused.text
    assert _bucket_size(record) == SIZE  # still reserved by the file record, until it is deleted
    _books_and_s3_agree()

    assert rdm.delete(record.pid, KEY).status_code == 204
    assert _bucket_size(record) == 0
    _books_and_s3_agree()


def test_init_over_the_quota_is_refused_and_changes_nothing(rdm, record, s3_client, s3_bucket):
    bucket = db.session.get(Bucket, record.bucket_id)
    bucket.quota_size = SIZE - 1
    db.session.commit()

    refused = rdm.init_multipart(record.pid, KEY, SIZE, PART_SIZE)
    assert refused.status_code == 400, refused.text
    assert "quota" in refused.text.lower()
    assert rdm.list(record.pid).json()["entries"] == []
    assert _bucket_size(record) == 0
    assert _uploads_in_s3(s3_client, s3_bucket) == []
    db.session.rollback()
    assert db.session.query(MultipartUploadSession).count() == 0
    _books_and_s3_agree()


@pytest.mark.parametrize(
    ("transfer", "field"),
    [
        ({"type": "M", "parts": 2, "part_size": PART_SIZE}, "transfer.parts"),  # 3 parts of this size
        ({"type": "M", "parts": 3, "part_size": 1024}, "part_size"),  # below S3's minimum
    ],
)
def test_init_with_an_inconsistent_plan_is_refused(rdm, record, s3_client, s3_bucket, transfer, field):
    refused = rdm.init(record.pid, [{"key": KEY, "size": SIZE, "transfer": transfer}])
    assert refused.status_code == 400, refused.text
    assert field in refused.text
    assert rdm.list(record.pid).json()["entries"] == []
    assert _uploads_in_s3(s3_client, s3_bucket) == []
    assert _bucket_size(record) == 0


def test_part_content_through_the_server_is_refused(rdm, record):
    _init(rdm, record)
    answer = rdm.http.put(f"{rdm.file_url(record.pid, KEY)}/content/1", data=b"x" * 10,
                          headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert answer.status_code == 400, answer.text
    assert "links.parts" in answer.text
    assert _session().status is MultipartUploadStatus.IN_PROGRESS


@pytest.mark.s3_backends("ceph")
def test_expired_links_are_refused_by_s3_and_signed_again_on_the_next_read(rdm, record, monkeypatch):
    """Links signed two hours ago for one hour: Ceph refuses them; the file's next read signs fresh ones."""
    payload = fresh_random_bytes(SIZE)
    presigner = current_oarepo_s3.presigner
    real_clock = presigner._clock
    monkeypatch.setattr(presigner, "_clock", lambda: real_clock() - 7200)
    stale = _init(rdm, record)
    monkeypatch.setattr(presigner, "_clock", real_clock)

    refused = requests.put(stale["links"]["parts"][0]["url"], data=payload[:PART_SIZE], timeout=60)
    assert refused.status_code == 403, refused.text
    assert b"AccessDenied" in refused.content, refused.text  # (RGW's code for an expired presigned URL)

    fresh = rdm.read(record.pid, KEY).json()
    put_parts(fresh, payload, PART_SIZE)
    commit = rdm.commit(record.pid, KEY)
    assert commit.status_code == 200, commit.text
    assert rdm.content(record.pid, KEY).content == payload


def test_a_file_begun_under_invenio_s3s_storage_is_finished_by_ours(rdm, record, s3_client, s3_bucket, app,
                                                                    monkeypatch):
    """Switching FILES_REST_STORAGE_FACTORY mid-upload: the pending file's metadata has no session_id."""
    from invenio_s3 import s3fs_storage_factory

    payload = fresh_random_bytes(SIZE)
    state = app.extensions["invenio-files-rest"]
    ours = state.storage_factory
    monkeypatch.setattr(state, "storage_factory", s3fs_storage_factory)
    pending = _init(rdm, record)
    monkeypatch.setattr(state, "storage_factory", ours)
    # No session row stands for it, but its FileInstance does: neither the orphan sweep nor the audit
    # calls it an orphan, however old.
    assert list(sweep_orphans(grace=0)) == []
    assert len(_uploads_in_s3(s3_client, s3_bucket)) == 1
    db.session.rollback()
    # invenio-s3's path never reserves the size in the bucket: the audit says so, and the operator's
    # `invenio oarepo-s3 fix-bucket-sizes` puts it right (docs/invenio-rdm.md, migration).
    assert [p.kind for p in audit(grace=0).problems] == ["bucket-size"]
    db.session.rollback()
    runner = app.test_cli_runner()
    dry = runner.invoke(oarepo_s3_cli, ["fix-bucket-sizes", "--dry-run"], catch_exceptions=False)
    assert f"would set bucket {record.bucket_id} size 0 -> {SIZE}" in dry.output, dry.output
    assert _bucket_size(record) == 0
    done = runner.invoke(oarepo_s3_cli, ["fix-bucket-sizes"], catch_exceptions=False)
    assert "1 bucket size(s) fixed" in done.output, done.output
    assert _bucket_size(record) == SIZE
    _books_and_s3_agree()

    put_parts(pending, payload, PART_SIZE)
    relisted = rdm.read(record.pid, KEY).json()
    assert len(relisted["links"]["parts"]) == 3  # invenio-s3's own links, through our storage
    commit = rdm.commit(record.pid, KEY)
    assert commit.status_code == 200, commit.text
    assert rdm.content(record.pid, KEY).content == payload
    assert _uploads_in_s3(s3_client, s3_bucket) == []
    _books_and_s3_agree()


def test_a_delete_that_rolls_back_leaves_the_upload_resumable(rdm, record, s3_client, s3_bucket, app):
    """records-resources' transaction may fail after our abort (a concurrent change of its record): S3 follows
    the books only once they are committed, so the rolled-back delete leaves a pending file that still uploads."""
    payload = fresh_random_bytes(SIZE)
    pending = _init(rdm, record)
    metadata = _session_metadata(rdm, record)
    with app.test_request_context():
        _storage_of_the_upload(app).multipart_abort_upload(**metadata)
        db.session.rollback()
    assert len(_uploads_in_s3(s3_client, s3_bucket)) == 1
    assert _session().status is MultipartUploadStatus.IN_PROGRESS

    put_parts(pending, payload, PART_SIZE)
    assert rdm.commit(record.pid, KEY).status_code == 200
    assert rdm.content(record.pid, KEY).content == payload
    _books_and_s3_agree()


def test_the_sweep_aborts_the_upload_of_an_aborted_session_s3_still_lists(rdm, record, s3_client, s3_bucket):
    """A crash between the commit of a delete and its S3 abort: the session says aborted, S3 still lists it."""
    _init(rdm, record)
    row = _session()
    row.status = MultipartUploadStatus.ABORTED
    db.session.commit()
    assert [p.kind for p in audit(grace=0).problems if p.kind == "upload-left"] == ["upload-left"]

    (swept,) = sweep_orphans(grace=0)
    assert swept.aborted
    assert _uploads_in_s3(s3_client, s3_bucket) == []


def _session_metadata(rdm, record) -> dict:
    from .records import RdmFileMetadata

    db.session.rollback()
    (row,) = db.session.query(RdmFileMetadata).all()
    return row.json["transfer"]["multipart_metadata"]


def test_a_location_that_is_not_s3_takes_records_resources_generic_path(rdm, db, tmp_path):
    """Our factory hands a file:// location's files to files-rest's own storage, which has no multipart_*
    methods: records-resources then takes the parts through the server and writes them in place."""
    from invenio_files_rest.models import Location

    from .records import RdmRecord

    db.session.add(Location(name="local", uri=str(tmp_path), default=True))
    db.session.commit()
    local = RdmRecord.create({})
    local.commit()
    db.session.commit()
    pid = local.pid.pid_value

    payload = fresh_random_bytes(2 * 1000 + 500)
    init = rdm.init_multipart(pid, "local.bin", len(payload), 1000)
    assert init.status_code == 201, init.text
    (entry,) = init.json()["entries"]
    assert [p["part"] for p in entry["links"]["parts"]] == [1, 2, 3]
    assert all(p["url"].startswith(rdm.base_url) for p in entry["links"]["parts"])  # the server's own URLs
    for n in (1, 2, 3):
        put = rdm.http.put(f"{rdm.file_url(pid, 'local.bin')}/content/{n}", data=payload[(n - 1) * 1000 : n * 1000],
                           headers={"Content-Type": "application/octet-stream"}, timeout=60)
        assert put.status_code == 200, put.text
    assert rdm.commit(pid, "local.bin").status_code == 200
    assert rdm.content(pid, "local.bin").content == payload
    db.session.rollback()
    assert db.session.query(MultipartUploadSession).count() == 0  # none of our business
