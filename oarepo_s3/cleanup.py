"""Cleanup of unfinished uploads: expiry of timed-out sessions, and the orphan sweep.

**Expiry** (:func:`expire_uploads`). Sessions still ``in_progress`` whose
``expires`` has passed are expired one at a time, oldest first, each in its
own short transaction:

1. find the next one: ``SELECT ... WHERE status = 'in_progress' AND
   expires < :now ORDER BY expires, id LIMIT 1``, past the cursor;
2. :func:`oarepo_s3.service.expire_upload` locks its bucket (waiting at
   most ``OAREPO_S3_CLEANUP_LOCK_TIMEOUT``: workers on one bucket take
   turns, a long request makes the run pass the session over), then the
   row with ``SKIP LOCKED``, so no session is handled twice. SQLite has no row
   locks but serialises writers (the service takes its write lock first).
   Under the locks it refuses anything not in progress (a completed file
   is never touched), aborts the S3 upload (``NoSuchUpload``: already
   gone, fine; any other S3 error leaves the session in progress and the
   transaction is rolled back), removes the pending version and
   FileInstance (the bucket's size gives the reservation back), marks the
   session ``expired`` and commits;
3. :data:`oarepo_s3.signals.upload_expired` is sent after that commit.

One row per transaction holds a lock only for one S3 call. A keyset cursor
``(expires, id)`` moves past every row the run has seen, so a session S3
refused is not retried in a loop and the run's memory stays flat however
long the backlog is. A crash at any point leaves either the old state
(the next run does it again; S3 answers ``NoSuchUpload`` if the abort had
already happened) or the finished one.

**Orphan sweep** (:func:`sweep_orphans`). S3 multipart uploads in the
buckets of ``s3://`` files locations that the database does not know
(CreateMultipartUpload succeeded, the session row was never committed) are
aborted once they are older than ``OAREPO_S3_ORPHAN_GRACE``. An upload with
a session row in progress or complete, or at the key of a FileInstance row
(another door's upload: one begun under invenio-s3's storage before the
switch), is never the sweep's business: the expiry handles those in
progress. The upload of an aborted or expired session that S3 still lists
is aborted (again: aborting twice is harmless): its abort was to follow a
commit and did not happen (a crash in between).
Only keys with the exact shape files-rest gives file instances
(``<location path>/ab/cd/<rest-of-uuid>/data``) are considered, so other
uploads in a shared bucket are never touched.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, cast

import sqlalchemy as sa
from flask import current_app
from invenio_db import db
from invenio_files_rest.models import FileInstance, Location
from sqlalchemy.exc import SQLAlchemyError

from .api import MultipartUploadStatus
from .errors import S3Error, S3Unavailable, UploadNotFound, UploadStateConflict
from .models import MultipartUploadSession, utcnow
from .proxies import current_oarepo_s3
from .s3 import PendingUpload, S3Client
from .service import atomic, expire_upload
from .signals import upload_expired

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class ExpiredUpload:
    """An upload session the cleanup expired (or, in a dry run, would expire)."""

    id: uuid.UUID
    key: str
    """File name in the Invenio bucket."""
    bucket_id: uuid.UUID | None
    owner_id: int | None
    size: int
    """Declared size, given back to the bucket's quota."""
    expires: datetime
    s3_bucket: str
    s3_key: str
    upload_id: str


@dataclass(frozen=True, slots=True)
class OrphanUpload:
    """An S3 multipart upload the sweep aborted (or, in a dry run, would abort)."""

    s3_bucket: str
    s3_key: str
    upload_id: str
    initiated: datetime
    aborted: bool
    """False in a dry run, or when S3 no longer held the upload (NoSuchUpload)."""


@dataclass(frozen=True, slots=True)
class CleanupFailure:
    """Something the cleanup left as it was because S3 (or the database, or anything else) failed."""

    what: str
    error: str
    unavailable: bool
    """S3 (or the database) could not be reached: the run stops, as every further call would fail the same way."""
    attempts: int = 0
    """An upload's failures so far, this one included (0: not about one upload)."""
    retry_at: datetime | None = None
    """When the cleanup tries that upload again (backoff); until then it passes it over."""


CleanupItem = ExpiredUpload | OrphanUpload | CleanupFailure


@dataclass
class CleanupReport:
    """What one cleanup run did (counts only: memory stays flat)."""

    expired: int = 0
    orphans: int = 0
    failures: int = 0
    stopped: bool = False
    """The run stopped early because S3 could not be reached."""

    def add(self, item: CleanupItem) -> None:
        """Count one item."""
        if isinstance(item, ExpiredUpload):
            self.expired += 1
        elif isinstance(item, OrphanUpload):
            self.orphans += 1
        else:
            self.failures += 1
            self.stopped = self.stopped or item.unavailable


def as_timedelta(value: timedelta | int | float) -> timedelta:
    """A config duration: a ``timedelta``, or seconds (as environment variables give them)."""
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def run_cleanup(
    *,
    limit: int | None = None,
    dry_run: bool = False,
    sweep: bool | None = None,
    retry_failed: bool = False,
    on_item: Callable[[CleanupItem], None] | None = None,
) -> CleanupReport:
    """Expire timed-out uploads, then sweep orphans (when ``OAREPO_S3_ORPHAN_SWEEP`` is on).

    :param limit: most sessions to expire (default ``OAREPO_S3_CLEANUP_LIMIT``).
    :param dry_run: change nothing, report what would be done.
    :param retry_failed: also try uploads whose earlier failure's backoff has not run out.
    :param sweep: run the orphan sweep; None: as ``OAREPO_S3_ORPHAN_SWEEP`` says.
    :param on_item: called with each :data:`CleanupItem` as it happens.
    :returns: the counts.
    """
    report = CleanupReport()
    if sweep is None:
        sweep = current_app.config["OAREPO_S3_ORPHAN_SWEEP"]
    stages: list[Iterable[CleanupItem]] = [expire_uploads(limit, dry_run=dry_run, retry_failed=retry_failed)]
    if sweep:
        stages.append(sweep_orphans(dry_run=dry_run))
    for stage in stages:
        for item in stage:
            report.add(item)
            if on_item is not None:
                on_item(item)
        if report.stopped:
            break
    return report


# --- expiry ------------------------------------------------------------------


def expire_uploads(
    limit: int | None = None, *, dry_run: bool = False, now: datetime | None = None, retry_failed: bool = False
) -> Iterator[ExpiredUpload | CleanupFailure]:
    """Expire in-progress sessions whose time is up, oldest first; yield what happened.

    Each session is expired and committed in its own transaction by
    :func:`oarepo_s3.service.expire_upload`, which takes the bucket's lock
    (waiting at most ``OAREPO_S3_CLEANUP_LOCK_TIMEOUT``), then the
    session's (not waiting): a session a request holds is passed over until
    the next run. Run it from any number of workers at once.

    A session that cannot be expired, whatever the reason, is left in
    progress with the error, its attempt count and a backoff recorded on
    its row, and the run goes on; runs pass it over until the backoff
    (``OAREPO_S3_CLEANUP_RETRY_BACKOFF``, doubled per attempt, at most
    ``OAREPO_S3_CLEANUP_MAX_BACKOFF``) has run out. Only an S3 (or
    database) that cannot be reached at all stops the run.

    :param limit: most sessions to look at (default ``OAREPO_S3_CLEANUP_LIMIT``).
    :param dry_run: change nothing; yield the sessions that would be expired.
    :param now: expire sessions whose ``expires`` is before this (default: the start of the run).
    :param retry_failed: ignore the backoff of earlier failures.
    """
    config = current_app.config
    if limit is None:
        limit = config["OAREPO_S3_CLEANUP_LIMIT"]
    now = now or utcnow()
    lock_timeout = as_timedelta(config["OAREPO_S3_CLEANUP_LOCK_TIMEOUT"]).total_seconds()
    after: tuple[datetime, uuid.UUID] | None = None
    for _ in range(limit):
        try:
            with atomic():
                row = _next_expired(now, after, retry_failed=retry_failed)
                info = None if row is None else _describe(row)
        except SQLAlchemyError as e:
            yield CleanupFailure("finding the next expired upload", str(e), unavailable=True)
            return
        if info is None:
            return
        after = (info.expires, info.id)
        if dry_run:
            yield info
            continue
        try:
            expired = expire_upload(info.id, wait_at_most=lock_timeout)
        except (UploadNotFound, UploadStateConflict):
            continue  # completed, aborted or expired since we looked: nothing to do
        except S3Unavailable as e:
            log.warning("S3 cannot be reached; the cleanup stops (upload %s stays in progress): %s", info.id, e)
            yield CleanupFailure(f"session {info.id}", str(e), unavailable=True)
            return
        except Exception as e:  # whatever the reason: record it, back off, go on
            yield _failed(info, e)
            continue
        if expired is None:
            continue  # a request held its bucket or row too long: the next run takes it
        log.info("expired upload %s (%s in bucket %s)", info.id, info.key, info.bucket_id)
        _notify(info)
        yield info


def _failed(info: ExpiredUpload, error: Exception) -> CleanupFailure:
    """Record a session's failure on its row (attempts, error, backoff); the failure to report."""
    text = f"{type(error).__name__}: {error}"[:4000]
    log.warning("could not expire upload %s (left in progress, tried again after a backoff): %s", info.id, text)
    what = f"session {info.id}"
    try:
        attempts, retry_at = record_cleanup_failure(info.id, text)
    except SQLAlchemyError as e:
        return CleanupFailure(what, f"{text}; recording it failed too: {e}", unavailable=True)
    return CleanupFailure(what, text, unavailable=False, attempts=attempts, retry_at=retry_at)


def record_cleanup_failure(session_id: uuid.UUID, error: str) -> tuple[int, datetime]:
    """Count a failure of the cleanup on a session, keep its error and set its backoff; commit.

    :returns: the attempts so far and when the cleanup may try again.
    """
    config = current_app.config
    m = MultipartUploadSession
    with atomic():
        attempts = db.session.execute(
            sa.update(m).where(m.id == session_id)
            .values(cleanup_attempts=m.cleanup_attempts + 1, cleanup_error=error)
            .returning(m.cleanup_attempts)
            .execution_options(synchronize_session=False)
        ).scalar_one()
        base = as_timedelta(config["OAREPO_S3_CLEANUP_RETRY_BACKOFF"])
        backoff = min(base * 2 ** min(attempts - 1, 32), as_timedelta(config["OAREPO_S3_CLEANUP_MAX_BACKOFF"]))
        retry_at = utcnow() + backoff
        db.session.execute(
            sa.update(m).where(m.id == session_id).values(cleanup_retry_at=retry_at)
            .execution_options(synchronize_session=False)
        )
    return attempts, retry_at


def _next_expired(now: datetime, after: tuple[datetime, uuid.UUID] | None, *,
                  retry_failed: bool) -> MultipartUploadSession | None:
    """The oldest expired in-progress session past the cursor and out of backoff (read without a lock)."""
    m = MultipartUploadSession
    query = sa.select(m).where(m.status == MultipartUploadStatus.IN_PROGRESS, m.expires < now)
    if not retry_failed:
        query = query.where(sa.or_(m.cleanup_retry_at.is_(None), m.cleanup_retry_at <= now))
    if after is not None:
        expires, row_id = after
        # ">= expires" lets the (status, expires) index bound the scan.
        query = query.where(m.expires >= expires, sa.or_(m.expires > expires, m.id > row_id))
    row: MultipartUploadSession | None = db.session.execute(query.order_by(m.expires, m.id).limit(1)).scalars().first()
    return row


def _describe(row: MultipartUploadSession) -> ExpiredUpload:
    return ExpiredUpload(
        id=row.id,
        key=row.key,
        bucket_id=row.bucket_id,
        owner_id=row.owner_id,
        size=row.size,
        expires=row.expires,
        s3_bucket=row.s3_bucket,
        s3_key=row.s3_key,
        upload_id=row.upload_id,
    )


def _notify(info: ExpiredUpload) -> None:
    """Send :data:`upload_expired`; commit what receivers changed, never fail the cleanup."""
    try:
        with atomic():
            upload_expired.send(cast(Any, current_app)._get_current_object(), upload=info)
    except Exception:
        log.exception("an upload_expired receiver failed for upload %s", info.id)


# --- orphan sweep ------------------------------------------------------------


def file_key_matcher(prefix: str, dimensions: int, split_length: int) -> Callable[[str], bool]:
    """A test for keys files-rest gives file instances under ``prefix``.

    ``invenio_files_rest.helpers.make_path`` splits ``str(fileinstance.id)``
    into ``dimensions`` segments of ``split_length`` characters, the rest,
    and ``data``: ``ab/cd/ef012345-.../data`` with the defaults (2, 2).

    :param prefix: the location's path inside the bucket, ``""`` or ending in ``/``.
    """

    def matches(key: str) -> bool:
        if not key.startswith(prefix):
            return False
        parts = key[len(prefix):].split("/")
        return (
            len(parts) == dimensions + 2
            and parts[-1] == "data"
            and all(len(p) == split_length for p in parts[:dimensions])
            and _UUID.match("".join(parts[:-1])) is not None
        )

    return matches


def s3_locations() -> list[tuple[str, str]]:
    """``(bucket, key prefix)`` of every ``s3://`` files location, without repeats."""
    targets = set()
    with atomic():
        for (uri,) in db.session.query(Location.uri).filter(Location.uri.like("s3://%")):
            bucket, _, path = uri[len("s3://"):].partition("/")
            path = path.strip("/")
            if bucket:
                targets.add((bucket, f"{path}/" if path else ""))
    return sorted(targets)


def sweep_orphans(
    *, grace: timedelta | int | float | None = None, dry_run: bool = False, now: datetime | None = None,
    lookup_batch: int = 1000,
) -> Iterator[OrphanUpload | CleanupFailure]:
    """Abort S3 multipart uploads of ours that the database does not know; yield them.

    Lists the uploads of every ``s3://`` location (all pages) and looks their
    ids up in the database ``lookup_batch`` at a time. An upload is aborted
    when its key has files-rest's shape, it was initiated before
    ``now - grace``, no session in progress or complete has its upload id and no FileInstance its key.

    :param grace: minimum age (default ``OAREPO_S3_ORPHAN_GRACE``).
    :param dry_run: abort nothing; yield what would be aborted.
    """
    config = current_app.config
    cutoff = (now or utcnow()) - as_timedelta(config["OAREPO_S3_ORPHAN_GRACE"] if grace is None else grace)
    dimensions = config["FILES_REST_STORAGE_PATH_DIMENSIONS"]
    split_length = config["FILES_REST_STORAGE_PATH_SPLIT_LENGTH"]
    s3 = current_oarepo_s3.s3
    for bucket, prefix in s3_locations():
        ours = file_key_matcher(prefix, dimensions, split_length)
        try:
            for chunk in _chunks(s3.list_multipart_uploads(bucket, prefix), lookup_batch):
                candidates = [u for u in chunk if ours(u.key) and u.initiated is not None and u.initiated < cutoff]
                if not candidates:
                    continue
                statuses = _session_statuses(bucket, [u.upload_id for u in candidates])
                owned = _keys_of_files(bucket, [u.key for u in candidates if u.upload_id not in statuses])
                for upload in candidates:
                    status = statuses.get(upload.upload_id)
                    if status in _LIVE or (status is None and upload.key in owned):
                        continue
                    item = _abort_orphan(s3, bucket, upload, dry_run)
                    yield item
                    if isinstance(item, CleanupFailure) and item.unavailable:
                        return
        except S3Error as e:
            log.warning("could not list multipart uploads in %s: %s", bucket, e)
            yield CleanupFailure(f"s3://{bucket}/{prefix}", str(e), unavailable=isinstance(e, S3Unavailable))
            if isinstance(e, S3Unavailable):
                return


def _abort_orphan(s3: S3Client, bucket: str, upload: PendingUpload, dry_run: bool) -> OrphanUpload | CleanupFailure:
    aborted = False
    if not dry_run:
        try:
            aborted = s3.abort_multipart_upload(bucket, upload.key, upload.upload_id)
        except S3Error as e:
            log.warning("could not abort orphaned upload %s of s3://%s/%s: %s", upload.upload_id, bucket, upload.key, e)
            return CleanupFailure(f"s3://{bucket}/{upload.key} (upload {upload.upload_id})", str(e),
                                  unavailable=isinstance(e, S3Unavailable))
        if aborted:
            log.info("aborted orphaned upload %s of s3://%s/%s", upload.upload_id, bucket, upload.key)
    return OrphanUpload(
        s3_bucket=bucket,
        s3_key=upload.key,
        upload_id=upload.upload_id,
        initiated=upload.initiated,
        aborted=aborted,
    )


_LIVE = (MultipartUploadStatus.IN_PROGRESS, MultipartUploadStatus.COMPLETE)
"""Sessions whose S3 upload is not the sweep's business. An aborted or expired session's upload that
S3 still lists (its abort was to follow a commit, and did not) is the sweep's to abort."""


def _session_statuses(bucket: str, upload_ids: list[str]) -> dict[str, MultipartUploadStatus]:
    m = MultipartUploadSession
    with atomic():
        query = sa.select(m.upload_id, m.status).where(m.s3_bucket == bucket, m.upload_id.in_(upload_ids))
        return {upload_id: status for upload_id, status in db.session.execute(query)}


def _keys_of_files(bucket: str, keys: list[str]) -> set[str]:
    """The keys a FileInstance row stands for: another door's upload in progress (one begun under
    invenio-s3's storage before the switch, say), committed with its file, so not an orphan."""
    if not keys:
        return set()
    uris = [f"s3://{bucket}/{key}" for key in keys]
    with atomic():
        found = db.session.execute(sa.select(FileInstance.uri).where(FileInstance.uri.in_(uris))).scalars()
        return {uri[len(f"s3://{bucket}/"):] for uri in found}


def _chunks(items: Iterable[PendingUpload], size: int) -> Iterator[list[PendingUpload]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
