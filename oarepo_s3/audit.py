"""Do the books hold, and do the database and S3 agree? A read-only audit.

``invenio oarepo-s3 audit`` (and the concurrency tests) run :func:`audit`,
which changes nothing and reports every :class:`Problem` it finds:

- ``bucket-size``: a bucket's size is not the sum of its file versions'
  sizes (pending uploads count with their declared size: the reservation;
  a version followed by a delete marker does not count, files-rest's rule);
- ``quota``: a bucket holds more than its quota;
- ``published-pending``: a locked (published) bucket with an upload in progress;
- ``session-file``: a session whose file does not match its state (a
  pending file that is readable (records-resources' own are), a completed one that is not or has another
  size, a finished upload still pointing at a file);
- ``upload-missing``: an upload in progress that S3 no longer holds;
- ``upload-left``: S3 still holds the multipart upload of a finished session;
- ``object-missing`` / ``object-size``: a readable file whose S3 object is
  missing (and no upload to its key in progress) or of another size;
- ``object-of-pending-upload``: an object already at the key of an upload
  still in progress (a completion that did not reach the books);
- ``orphan-upload`` / ``orphan-object``: an S3 multipart upload or object
  under a files location, with files-rest's key shape, that the database
  does not know, older than ``grace``.

It reads every row and lists every object and upload of the ``s3://``
files locations: an operator's tool, as slow as the bucket is large.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from invenio_db import db
from invenio_files_rest.models import Bucket, FileInstance

from .api import MultipartUploadStatus
from .cleanup import as_timedelta, file_key_matcher, s3_locations
from .models import MultipartUploadSession, utcnow
from .proxies import current_oarepo_s3
from .s3 import split_s3_url
from .service import atomic, counted_sizes

IN_PROGRESS, COMPLETE = MultipartUploadStatus.IN_PROGRESS, MultipartUploadStatus.COMPLETE


@dataclass(frozen=True, slots=True)
class Problem:
    """One disagreement: its kind (see the module's list), what it is about, and the details."""

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        """``kind subject: detail``, one line."""
        return f"{self.kind} {self.subject}: {self.detail}"


@dataclass
class AuditReport:
    """What :func:`audit` looked at, and what disagreed."""

    problems: list[Problem]
    buckets: int = 0
    sessions: int = 0
    objects: int = 0
    uploads: int = 0


def audit(*, grace: timedelta | int | float | None = None, now: datetime | None = None) -> AuditReport:
    """Check the books and compare them with S3; change nothing.

    :param grace: S3 uploads and objects younger than this are not called
        orphans (a start or completion may be between S3 and its commit);
        default ``OAREPO_S3_ORPHAN_GRACE``.
    """
    cutoff = (now or utcnow()) - as_timedelta(current_app.config["OAREPO_S3_ORPHAN_GRACE"] if grace is None else grace)
    report = AuditReport(problems=[])
    with atomic():  # one consistent read of the database, ended (nothing written) before S3 is listed
        report.problems.extend(_bucket_books(report))
        sessions = db.session.execute(sa.select(MultipartUploadSession)).scalars().all()
        report.sessions = len(sessions)
        report.problems.extend(_session_files(sessions))
        files = {uri: (size, readable) for uri, size, readable in db.session.execute(
            sa.select(FileInstance.uri, FileInstance.size, FileInstance.readable)
            .where(FileInstance.uri.like("s3://%"))
        )}
        by_upload = {(s.s3_bucket, s.upload_id): (s.id, s.status, s.s3_key) for s in sessions}
    report.problems.extend(_compare_with_s3(report, files, by_upload, cutoff))
    return report


def _bucket_books(report: AuditReport) -> Iterator[Problem]:
    live = counted_sizes()  # files-rest's rule (oarepo_s3.service.books)
    rows = db.session.execute(
        sa.select(Bucket.id, Bucket.size, Bucket.quota_size, Bucket.locked, sa.func.coalesce(live.c.total, 0))
        .outerjoin(live, live.c.bucket_id == Bucket.id)
    ).all()
    report.buckets = len(rows)
    pending = {bucket_id: count for bucket_id, count in db.session.execute(
        sa.select(MultipartUploadSession.bucket_id, sa.func.count())
        .where(MultipartUploadSession.status == IN_PROGRESS)
        .group_by(MultipartUploadSession.bucket_id)
    )}
    for bucket_id, size, quota, locked, total in rows:
        if size != total:
            yield Problem("bucket-size", f"bucket {bucket_id}", f"size {size}, but its files add up to {total}")
        if quota is not None and size > quota:
            yield Problem("quota", f"bucket {bucket_id}", f"size {size} is over its quota of {quota}")
        if locked and pending.get(bucket_id):
            yield Problem("published-pending", f"bucket {bucket_id}",
                          f"locked (published) with {pending[bucket_id]} upload(s) in progress")


def _session_files(sessions: list[MultipartUploadSession]) -> Iterator[Problem]:
    files = {f.id: f for f in db.session.execute(
        sa.select(FileInstance).where(FileInstance.id.in_([s.file_id for s in sessions if s.file_id]))
    ).scalars()}
    for s in sessions:
        subject = f"session {s.id} ({s.key!r})"
        file = files.get(s.file_id) if s.file_id else None
        if s.status is IN_PROGRESS:
            if file is None or s.version_id is None:
                yield Problem("session-file", subject, "in progress without its pending file")
            elif file.readable and s.transfer is None:  # (records-resources marks its pending files readable)
                yield Problem("session-file", subject, "in progress, but its file is readable")
        elif s.status is COMPLETE:
            if file is not None and (not file.readable or file.size != s.size):
                yield Problem("session-file", subject,
                              f"complete, but its file is {'readable' if file.readable else 'unreadable'} "
                              f"with {file.size} bytes of {s.size}")
        elif s.version_id is not None or s.file_id is not None:
            yield Problem("session-file", subject, f"{s.status.value}, but still points at a file")


def _compare_with_s3(
    report: AuditReport,
    files: dict[str, tuple[int, bool]],
    by_upload: dict[tuple[str, str], tuple[uuid.UUID, MultipartUploadStatus, str]],
    cutoff: datetime,
) -> Iterator[Problem]:
    config = current_app.config
    s3 = current_oarepo_s3.s3
    known_keys: dict[str, dict[str, tuple[int, bool]]] = {}
    for uri, facts in files.items():
        bucket, key = split_s3_url(uri)
        known_keys.setdefault(bucket, {})[key] = facts
    pending_keys = {(b, key) for (b, _), (_, status, key) in by_upload.items() if status is IN_PROGRESS}
    for bucket, prefix in s3_locations():
        ours = file_key_matcher(prefix, config["FILES_REST_STORAGE_PATH_DIMENSIONS"],
                                config["FILES_REST_STORAGE_PATH_SPLIT_LENGTH"])
        in_s3: set[str] = set()
        uploading: set[str] = set()  # keys with a multipart upload in progress (any door's)
        for upload in s3.list_multipart_uploads(bucket, prefix):
            report.uploads += 1
            in_s3.add(upload.upload_id)
            uploading.add(upload.key)
            session = by_upload.get((bucket, upload.upload_id))
            if session is None:
                if (ours(upload.key) and upload.key not in known_keys.get(bucket, {})  # (not another door's)
                        and upload.initiated is not None and upload.initiated < cutoff):
                    yield Problem("orphan-upload", f"s3://{bucket}/{upload.key}",
                                  f"upload {upload.upload_id} unknown to the database")
            elif session[1] is not IN_PROGRESS:
                yield Problem("upload-left", f"session {session[0]}",
                              f"{session[1].value}, but S3 still holds its upload {upload.upload_id}")
        for (s3_bucket, upload_id), (session_id, status, key) in by_upload.items():
            if s3_bucket == bucket and status is IN_PROGRESS and upload_id not in in_s3:
                yield Problem("upload-missing", f"session {session_id}",
                              f"in progress, but S3 no longer holds upload {upload_id} of {key}")
        stored = {}
        for obj in s3.list_objects(bucket, prefix):
            report.objects += 1
            stored[obj.key] = obj.size
            if (bucket, obj.key) in pending_keys:
                yield Problem("object-of-pending-upload", f"s3://{bucket}/{obj.key}",
                              "an object at the key of an upload still in progress")
            elif obj.key not in known_keys.get(bucket, {}) and ours(obj.key) and obj.last_modified < cutoff:
                yield Problem("orphan-object", f"s3://{bucket}/{obj.key}",
                              f"{obj.size} bytes that no file of the database refers to")
        for key, (size, readable) in known_keys.get(bucket, {}).items():
            if not readable or not key.startswith(prefix) or (bucket, key) in pending_keys or key in uploading:
                continue
            if key not in stored:
                yield Problem("object-missing", f"s3://{bucket}/{key}", f"a readable file of {size} bytes, no object")
            elif stored[key] != size:
                yield Problem("object-size", f"s3://{bucket}/{key}", f"{stored[key]} bytes in S3, {size} in the books")
