"""The upload lifecycle: start, sign, list, complete, abort, expire.

Owns the ordering rules that keep S3 and the database consistent (see
docs/architecture.md):

- start: validate (done by :class:`~oarepo_s3.api.MultipartUpload`) ->
  S3 CreateMultipartUpload -> insert the session row next to the pending
  ObjectVersion. The caller commits (it is inside ``record.files[key] = mu``);
  an S3 upload whose row never got committed is an orphan for the sweep.
- complete: lock the row -> ListParts (all pages) and compare with what the
  client reported and what was declared -> S3 Complete -> HeadObject ->
  mark the file readable with size and checksum -> commit. A mismatch
  leaves the upload in progress so the client can fix it and retry.
- abort / expire: lock the row -> S3 Abort (NoSuchUpload: already gone, and
  an object a failed completion left there is deleted) -> remove the pending
  ObjectVersion and FileInstance -> terminal status -> commit.
  Never for a completed upload.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from invenio_db import db
from invenio_files_rest.models import FileInstance, ObjectVersion
from sqlalchemy.exc import OperationalError

from .api import MultipartUpload, MultipartUploadStatus
from .errors import (
    InvalidUploadRequest,
    PartsMismatch,
    S3Error,
    S3Inconsistent,
    UploadExpired,
    UploadNotFound,
    UploadStateConflict,
)
from .models import MultipartUploadSession, utcnow
from .presign import SIGV4_MAX_EXPIRES
from .proxies import current_oarepo_s3
from .s3 import UploadedPart, normalize_etag, split_s3_url
from .sizes import expected_part_size

log = logging.getLogger(__name__)

_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_BASE64_MD5 = re.compile(r"^[A-Za-z0-9+/]{22}==$")
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
# S3 codes meaning "no such multipart upload (any more)": AWS and moto say NoSuchUpload;
# Ceph RGW 16 answers ListParts of a completed, aborted or unknown upload with NoSuchKey.
_UPLOAD_GONE = ("NoSuchUpload", "NoSuchKey")


@dataclass(frozen=True, slots=True)
class ReportedPart:
    """A part as the client reports it after uploading: number and ETag."""

    number: int
    etag: str


# --- start -----------------------------------------------------------------


def start_upload(mu: MultipartUpload, fileinstance: FileInstance, fileurl: str) -> MultipartUploadSession:
    """Create the S3 multipart upload for ``fileinstance`` and its session row.

    Called by the storage's ``save()``; fills ``mu.session``.

    :param fileurl: the ``s3://bucket/key`` the file will live at.
    :raises InvalidUploadRequest: ``fileurl`` is not under ``mu.base_uri``.
    :raises S3Error: S3 refused or could not be reached (nothing is written).
    """
    if mu.base_uri and not fileurl.startswith(mu.base_uri.rstrip("/") + "/"):
        raise InvalidUploadRequest("base_uri", f"must be the bucket's location; the file goes to {fileurl}")
    s3 = current_oarepo_s3.s3
    s3_bucket, s3_key = split_s3_url(fileurl)
    upload_id = s3.create_multipart_upload(s3_bucket, s3_key, mu.content_type)
    obj = next(iter(fileinstance.objects), None)
    if obj is not None:
        obj.mimetype = mu.content_type
    try:
        row = MultipartUploadSession(
            id=uuid.uuid4(),
            bucket_id=obj.bucket_id if obj is not None else None,
            version_id=obj.version_id if obj is not None else None,
            file_id=fileinstance.id,
            key=mu.key,
            s3_bucket=s3_bucket,
            s3_key=s3_key,
            upload_id=upload_id,
            content_type=mu.content_type,
            size=mu.size,
            part_size=mu.part_size,
            num_parts=mu.num_parts,
            owner_id=mu.owner_id,
            expires=utcnow() + mu.expires,
            status=MultipartUploadStatus.IN_PROGRESS,
            complete_url=mu.complete_url,
            abort_url=mu.abort_url,
        )
        with db.session.begin_nested():
            db.session.add(row)
    except Exception:
        # The row could not be written: do not leave the S3 upload behind.
        s3.abort_multipart_upload(s3_bucket, s3_key, upload_id)
        raise
    mu.session = session_dict(row)
    return row


# --- signing ---------------------------------------------------------------


def url_lifetime(row: MultipartUploadSession) -> int:
    """Seconds a part URL signed now may live: until the upload expires, capped.

    :raises UploadExpired: the upload's time is up.
    """
    remaining = int((row.expires - utcnow()).total_seconds())
    if remaining <= 0:
        raise UploadExpired()
    cap = current_oarepo_s3.app.config["OAREPO_S3_PART_URL_EXPIRATION"] or SIGV4_MAX_EXPIRES
    return min(remaining, cap, SIGV4_MAX_EXPIRES)


def sign_parts(
    row: MultipartUploadSession,
    part_numbers: Iterable[int],
    content_md5: dict[int, str] | None = None,
    content_sha256: dict[int, str] | None = None,
) -> dict[int, str]:
    """Fresh presigned UploadPart URLs for ``part_numbers`` of an in-progress upload.

    :param content_md5: base64 MD5 digests by part number; each one is signed
        into its URL, so S3 accepts only a PUT that sends that ``Content-MD5``
        header and bytes matching it (corruption on the way is refused).
    :param content_sha256: hex SHA-256 digests by part number, signed as the
        payload hash (``x-amz-content-sha256``): the same guarantee, cheaper
        for clients whose CPU hashes SHA-256 in hardware. Servers that check
        signatures (AWS, Ceph, MinIO) verify it; moto does not.
    :raises InvalidUploadRequest: a part number outside ``1..num_parts`` or a malformed digest.
    :raises UploadStateConflict / UploadExpired: the upload is not in progress.
    """
    _ensure_in_progress(row)
    numbers = list(part_numbers)
    num_parts = row.num_parts  # an ORM attribute: read it once, not once per part
    for n in numbers:
        if type(n) is not int or not 1 <= n <= num_parts:
            raise InvalidUploadRequest("parts", f"part numbers must be integers from 1 to {num_parts}")
    md5s, sha256s = content_md5 or {}, content_sha256 or {}
    wanted = set(numbers)
    for field, digests, pattern, rule in (
        ("content_md5", md5s, _BASE64_MD5, "must be the base64 of a 16-byte MD5 digest"),
        ("content_sha256", sha256s, _HEX_SHA256, "must be the 64 lowercase hex digits of a SHA-256 digest"),
    ):
        for n, digest in digests.items():
            if n not in wanted:
                raise InvalidUploadRequest(f"{field}.{n}", "names a part that is not being signed")
            if not isinstance(digest, str) or not pattern.match(digest):
                raise InvalidUploadRequest(f"{field}.{n}", rule)
    presigner = current_oarepo_s3.presigner
    bucket, key, upload_id = current_oarepo_s3.s3.bucket_name(row.s3_bucket), row.s3_key, row.upload_id
    expires_in = url_lifetime(row)
    if not md5s and not sha256s:
        return dict(zip(numbers, presigner.upload_part_urls(bucket, key, upload_id, numbers, expires_in=expires_in)))
    plain = [n for n in numbers if n not in md5s and n not in sha256s]
    urls = dict(zip(plain, presigner.upload_part_urls(bucket, key, upload_id, plain, expires_in=expires_in)))
    for n in wanted.difference(plain):
        urls[n] = presigner.upload_part_url(bucket, key, upload_id, n, expires_in=expires_in,
                                            content_md5=md5s.get(n), content_sha256=sha256s.get(n))
    return {n: urls[n] for n in numbers}


def sign_all_parts(row: MultipartUploadSession) -> list[str]:
    """Presigned URLs for every part in order (empty once the upload is finished)."""
    if row.status is not MultipartUploadStatus.IN_PROGRESS or row.is_expired:
        return []
    return current_oarepo_s3.presigner.upload_part_urls(
        current_oarepo_s3.s3.bucket_name(row.s3_bucket),
        row.s3_key,
        row.upload_id,
        range(1, row.num_parts + 1),
        expires_in=url_lifetime(row),
    )


def session_dict(row: MultipartUploadSession) -> dict:
    """The session description with freshly signed part URLs (the seed's ``mu.session``)."""
    return row.as_session(parts_url=sign_all_parts(row))


def list_uploaded_parts(row: MultipartUploadSession) -> list[UploadedPart]:
    """The parts S3 already holds for an in-progress upload (for resuming)."""
    _ensure_in_progress(row)
    return current_oarepo_s3.s3.list_parts(row.s3_bucket, row.s3_key, row.upload_id)


# --- complete --------------------------------------------------------------


def complete_upload(
    session: MultipartUploadSession | uuid.UUID | str, parts: Iterable[ReportedPart] | None = None
) -> MultipartUploadSession:
    """Verify the parts and complete the upload; commit. Idempotent.

    :param parts: what the client uploaded (number, ETag), or None to take
        S3's part list as it is.
    :returns: the completed session (``checksum`` and the file are set).
    :raises PartsMismatch: parts missing, ETags or sizes differ; still resumable.
    :raises UploadStateConflict: the upload was aborted.
    :raises UploadExpired: the upload's time is up.
    :raises S3Error: S3 failed; the database is unchanged.
    """
    row = _lock(session)
    if row.status is MultipartUploadStatus.COMPLETE:
        return row
    _ensure_in_progress(row)
    s3 = current_oarepo_s3.s3
    try:
        in_s3 = s3.list_parts(row.s3_bucket, row.s3_key, row.upload_id)
    except S3Error as e:
        if e.s3_code not in _UPLOAD_GONE:
            raise
        # An earlier attempt completed in S3 but crashed before the commit.
        return _finish_books(row, _completed_object(row, etag_hint=""))
    chosen = _verify_parts(row, in_s3, None if parts is None else list(parts))
    try:
        s3.complete_multipart_upload(row.s3_bucket, row.s3_key, row.upload_id, chosen)
    except S3Error as e:
        if e.s3_code not in _UPLOAD_GONE:
            raise
    return _finish_books(row, _completed_object(row, etag_hint=multipart_etag(chosen)))


def multipart_etag(parts: list[UploadedPart]) -> str:
    """The ETag S3 gives a multipart object: md5 of the parts' binary MD5s, ``-N``.

    Empty when a part ETag is not an MD5 (e.g. SSE-KMS), as then no one can
    recompute it from the bytes.
    """
    if not all(_MD5_HEX.match(p.etag) for p in parts):
        return ""
    digest = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in parts), usedforsecurity=False)
    return f"{digest.hexdigest()}-{len(parts)}"


def _verify_parts(
    row: MultipartUploadSession, in_s3: list[UploadedPart], reported: list[ReportedPart] | None
) -> list[UploadedPart]:
    """Check S3's parts against the declaration (and the client's report); return parts 1..N."""
    problems: list[tuple[str, str]] = []
    if reported is not None:
        seen: set[int] = set()
        for i, part in enumerate(reported):
            if isinstance(part.number, bool) or not isinstance(part.number, int) or not 1 <= part.number <= row.num_parts:
                raise InvalidUploadRequest(f"parts[{i}].PartNumber", f"must be an integer from 1 to {row.num_parts}")
            if part.number in seen:
                raise InvalidUploadRequest(f"parts[{i}].PartNumber", f"part {part.number} is listed twice")
            seen.add(part.number)
        missing = sorted(set(range(1, row.num_parts + 1)) - seen)
        if missing:
            raise InvalidUploadRequest("parts", f"must list every part 1..{row.num_parts}; missing {_numbers(missing)}")
    by_number = {p.number: p for p in in_s3}
    not_uploaded = [n for n in range(1, row.num_parts + 1) if n not in by_number]
    if not_uploaded:
        problems.append(("parts", f"parts {_numbers(not_uploaded)} are not in S3"))
    for n in range(1, row.num_parts + 1):
        part = by_number.get(n)
        if part is None:
            continue
        want = expected_part_size(n, row.size, row.part_size)
        if part.size != want:
            problems.append((f"parts[{n}]", f"part {n} has {part.size} bytes in S3, expected {want}"))
    for i, part in enumerate(reported or ()):
        held = by_number.get(part.number)
        if held is not None and normalize_etag(part.etag) != held.etag:
            problems.append(
                (f"parts[{i}].ETag", f"part {part.number}: ETag {normalize_etag(part.etag)!r} differs from S3's {held.etag!r}")
            )
    if problems:
        raise PartsMismatch(problems)
    return [by_number[n] for n in range(1, row.num_parts + 1)]


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def _completed_object(row: MultipartUploadSession, etag_hint: str):
    """HeadObject the completed file and check its size against the declaration."""
    info = current_oarepo_s3.s3.head_object(row.s3_bucket, row.s3_key)
    if info is None:
        raise UploadNotFound("S3 no longer holds this upload and the object does not exist.")
    if info.size != row.size:
        raise S3Inconsistent(f"The object in S3 has {info.size} bytes, but {row.size} were declared.")
    # Ceph RGW answers Complete with an empty ETag; HeadObject or our own computation fills it.
    return info.size, info.etag or etag_hint


def _finish_books(row: MultipartUploadSession, size_and_etag: tuple[int, str]) -> MultipartUploadSession:
    size, etag = size_and_etag
    row.checksum = f"s3etag:{etag}" if etag else None
    row.status = MultipartUploadStatus.COMPLETE
    row.completed = utcnow()
    if row.file is not None:
        row.file.set_uri(row.file.uri, size, row.checksum, readable=True, writable=False)
    db.session.commit()
    return row


# --- abort / expire --------------------------------------------------------


def abort_upload(session: MultipartUploadSession | uuid.UUID | str) -> MultipartUploadSession:
    """Abort an in-progress upload in S3, remove its pending file; commit.

    :raises UploadStateConflict: the upload is complete (delete the file instead).
    :raises UploadNotFound: it was already aborted or expired.
    """
    return _terminate(_lock(session), MultipartUploadStatus.ABORTED)


def expire_upload(session: MultipartUploadSession | uuid.UUID | str) -> MultipartUploadSession:
    """Like :func:`abort_upload`, for an upload whose time ran out (status ``expired``)."""
    return _terminate(_lock(session), MultipartUploadStatus.EXPIRED)


def _terminate(row: MultipartUploadSession, status: MultipartUploadStatus) -> MultipartUploadSession:
    if row.status is MultipartUploadStatus.COMPLETE:
        raise UploadStateConflict("The upload is complete; delete the file instead of aborting it.")
    if row.status is not MultipartUploadStatus.IN_PROGRESS:
        raise UploadNotFound(f"The upload was already {row.status.value}.")
    s3 = current_oarepo_s3.s3
    if not s3.abort_multipart_upload(row.s3_bucket, row.s3_key, row.upload_id):
        # S3 no longer knows the upload: aborted before, or completed by an attempt whose
        # database commit failed. Such an object belongs to no file: delete it, or it is orphaned.
        s3.delete_object(row.s3_bucket, row.s3_key)
    _remove_pending_file(row)
    row.status = status
    db.session.commit()
    return row


def _remove_pending_file(row: MultipartUploadSession) -> None:
    """Drop the pending ObjectVersion and FileInstance (bucket size follows)."""
    obj, fileinstance = row.object_version, row.file
    row.object_version = None
    row.file = None
    if obj is not None:
        was_head, bucket, key = obj.is_head, obj.bucket, obj.key
        obj.remove()
        db.session.expunge(obj)
        if was_head:
            previous = (
                ObjectVersion.query.filter_by(bucket_id=bucket.id, key=key)
                .order_by(ObjectVersion.created.desc())
                .first()
            )
            if previous is not None:
                previous.is_head = True
    if fileinstance is not None:
        db.session.delete(fileinstance)
    db.session.flush()


# --- helpers ---------------------------------------------------------------


def get_session(session_id: uuid.UUID | str) -> MultipartUploadSession:
    """Load a session by id. :raises UploadNotFound: no such session."""
    try:
        session_id = uuid.UUID(str(session_id))
    except ValueError:
        raise UploadNotFound() from None
    row = db.session.get(MultipartUploadSession, session_id)
    if row is None:
        raise UploadNotFound()
    return row


def sqlite_write_lock() -> None:
    """On SQLite, take the database write lock now; elsewhere do nothing.

    SQLite ignores ``FOR UPDATE``. A write that changes nothing takes its
    write lock, so what the transaction reads next stays true until it
    commits: another request's completion, abort or expiry of the same
    upload waits instead of acting on a status that is about to change (it
    would otherwise, e.g., expire an upload whose completion S3 has just
    done). If this transaction's read snapshot is already older than another
    writer's commit, SQLite refuses the upgrade (``SQLITE_BUSY_SNAPSHOT``);
    nothing has been written yet, so the transaction starts afresh.
    """
    if db.session.get_bind().dialect.name != "sqlite":
        return
    m = MultipartUploadSession
    nothing = sa.update(m).where(sa.false()).values(status=m.status).execution_options(synchronize_session=False)
    try:
        db.session.execute(nothing)
    except OperationalError:
        db.session.rollback()
        db.session.execute(nothing)


def _lock(session: MultipartUploadSession | uuid.UUID | str) -> MultipartUploadSession:
    """Re-read the row with a row lock (SELECT ... FOR UPDATE; on SQLite its write lock)."""
    session_id = session.id if isinstance(session, MultipartUploadSession) else get_session(session).id
    sqlite_write_lock()
    return (
        db.session.query(MultipartUploadSession)
        .filter_by(id=session_id)
        .with_for_update()
        .populate_existing()
        .one()
    )


def _ensure_in_progress(row: MultipartUploadSession) -> None:
    if row.status is MultipartUploadStatus.COMPLETE:
        raise UploadStateConflict("The upload is already complete.")
    if row.status is not MultipartUploadStatus.IN_PROGRESS:
        raise UploadStateConflict(f"The upload was {row.status.value}.")
    if row.is_expired:
        raise UploadExpired()
