"""Completing an upload: verify every part against S3, then make the file readable.

Lock the bucket (shared: completions of other files go on) and the row ->
complete already? return it -> must be in progress and not expired ->
ListParts (all pages) -> compare with the client's report and the planned
part sizes -> S3 Complete -> HeadObject (size equals the declared one) ->
file readable with size and checksum, row complete -> commit.

A mismatch leaves the upload in progress, so the client can re-send parts
and complete again. If S3 no longer knows the upload but holds the object
with the declared size, an earlier attempt completed it and crashed before
its commit: the books are finished now (idempotent recovery).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from ..api import MultipartUploadStatus
from ..errors import FileNotFound, InvalidUploadRequest, PartsMismatch, S3Error, S3Inconsistent, UploadNotFound
from ..models import MultipartUploadSession, utcnow
from ..proxies import current_oarepo_s3
from ..results import FileEntry, UploadedPart, UploadSession
from ..s3 import normalize_etag
from ..sizes import expected_part_size
from .files import entry_with_session, head_version
from .locks import lock_bucket, lock_head_session, lock_upload
from .signing import SessionRef, describe, ensure_in_progress, session_id
from .transaction import atomic, owns_transaction

_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
UPLOAD_GONE_CODES = ("NoSuchUpload", "NoSuchKey")
"""S3 codes for "no such multipart upload (any more)": AWS and moto say NoSuchUpload;
Ceph RGW 16 answers ListParts of a completed, aborted or unknown upload with NoSuchKey."""


@dataclass(frozen=True, slots=True)
class ReportedPart:
    """A part as the client reports it after uploading: number and ETag."""

    number: int
    etag: str


def complete_upload(session: SessionRef, parts: Iterable[ReportedPart] | None = None) -> UploadSession:
    """Verify the parts and complete the upload; commit. Idempotent.

    :param parts: what the client uploaded (number, ETag), or None to take
        S3's part list as it is.
    :returns: the completed session (``checksum`` is set, the file is readable).
    :raises PartsMismatch: parts missing, ETags or sizes differ; still resumable.
    :raises UploadStateConflict: the upload was aborted or expired.
    :raises UploadExpired: the upload's time is up.
    :raises S3Error: S3 failed; the database is unchanged.
    """
    with atomic():
        row = lock_upload(session_id(session), shared_bucket=True)
        if row.status is not MultipartUploadStatus.COMPLETE:
            _complete(row, None if parts is None else list(parts))
        completed = describe(row)  # before the commit expires the row (no reload)
    return completed


def complete_file_upload(bucket_id: uuid.UUID, key: str, parts: Iterable[ReportedPart] | None = None) -> FileEntry:
    """Complete the multipart upload of the bucket's file ``key`` (see :func:`complete_upload`); commit.

    One transaction from the lookup to the answer: the bucket's shared lock,
    the file's head version and its session row (locked), the completion,
    and the file as it is now, without reading anything again after the commit.

    :returns: the completed file. Repeating it on a completed upload returns the same file.
    :raises FileNotFound: no such file, or it was not uploaded with a multipart upload.
    :raises PartsMismatch / UploadStateConflict / UploadExpired / S3Error: as :func:`complete_upload`.
    """
    with atomic():
        lock_bucket(bucket_id, shared=True, may_restart=owns_transaction())
        found = lock_head_session(bucket_id, key)
        if found is None:
            head_version(bucket_id, key)  # raises FileNotFound when the key has no file at all
            raise FileNotFound(f"{key!r} was not uploaded with a multipart upload.")
        obj, row = found
        if row.status is not MultipartUploadStatus.COMPLETE:
            _complete(row, None if parts is None else list(parts))
        entry = entry_with_session(obj, row)  # before the commit expires them (no reload)
    return entry


def _complete(row: MultipartUploadSession, reported: list[ReportedPart] | None) -> None:
    ensure_in_progress(row.status, row.expires)
    s3 = current_oarepo_s3.s3
    try:
        in_s3 = s3.list_parts(row.s3_bucket, row.s3_key, row.upload_id)
    except S3Error as e:
        if e.s3_code not in UPLOAD_GONE_CODES:
            raise
        # An earlier attempt completed in S3 but crashed before the commit.
        _finish_books(row, *_completed_object(row, etag_hint=""))
        return
    chosen = _verify_parts(row, in_s3, reported)
    try:
        s3.complete_multipart_upload(row.s3_bucket, row.s3_key, row.upload_id, chosen)
    except S3Error as e:
        if e.s3_code not in UPLOAD_GONE_CODES:
            raise
    _finish_books(row, *_completed_object(row, etag_hint=multipart_etag(chosen)))


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
    num_parts: int = row.num_parts
    if reported is not None:
        _check_report(reported, num_parts)
    problems: list[tuple[str, str]] = []
    by_number = {p.number: p for p in in_s3}
    not_uploaded = [n for n in range(1, num_parts + 1) if n not in by_number]
    if not_uploaded:
        problems.append(("parts", f"parts {_numbers(not_uploaded)} are not in S3"))
    for n in range(1, num_parts + 1):
        part = by_number.get(n)
        if part is None:
            continue
        want = expected_part_size(n, row.size, row.part_size)
        if part.size != want:
            problems.append((f"parts[{n}]", f"part {n} has {part.size} bytes in S3, expected {want}"))
    for i, reported_part in enumerate(reported or ()):
        held = by_number.get(reported_part.number)
        etag = normalize_etag(reported_part.etag)
        if held is not None and etag != held.etag:
            problems.append((f"parts[{i}].ETag",
                             f"part {reported_part.number}: ETag {etag!r} differs from S3's {held.etag!r}"))
    if problems:
        raise PartsMismatch(problems)
    return [by_number[n] for n in range(1, num_parts + 1)]


def _check_report(reported: list[ReportedPart], num_parts: int) -> None:
    """Every part 1..N exactly once in the client's report."""
    seen: set[int] = set()
    for i, part in enumerate(reported):
        if isinstance(part.number, bool) or not isinstance(part.number, int) or not 1 <= part.number <= num_parts:
            raise InvalidUploadRequest(f"parts[{i}].PartNumber", f"must be an integer from 1 to {num_parts}")
        if part.number in seen:
            raise InvalidUploadRequest(f"parts[{i}].PartNumber", f"part {part.number} is listed twice")
        seen.add(part.number)
    missing = sorted(set(range(1, num_parts + 1)) - seen)
    if missing:
        raise InvalidUploadRequest("parts", f"must list every part 1..{num_parts}; missing {_numbers(missing)}")


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def _completed_object(row: MultipartUploadSession, etag_hint: str) -> tuple[int, str]:
    """HeadObject the completed file and check its size against the declaration."""
    info = current_oarepo_s3.s3.head_object(row.s3_bucket, row.s3_key)
    if info is None:
        raise UploadNotFound("S3 no longer holds this upload and the object does not exist.")
    if info.size != row.size:
        raise S3Inconsistent(f"The object in S3 has {info.size} bytes, but {row.size} were declared.")
    # Ceph RGW answers Complete with an empty ETag; HeadObject or our own computation fills it.
    return info.size, info.etag or etag_hint


def _finish_books(row: MultipartUploadSession, size: int, etag: str) -> None:
    row.checksum = f"s3etag:{etag}" if etag else None
    row.status = MultipartUploadStatus.COMPLETE
    row.completed = utcnow()
    if row.file is not None:
        # records-resources sets its own checksum (multipart:<etag>-<part size>) and has a task
        # turn it into the whole file's MD5 later: its file keeps no checksum of ours.
        checksum = row.checksum if row.transfer is None else None
        row.file.set_uri(row.file.uri, size, checksum, readable=True, writable=False)
