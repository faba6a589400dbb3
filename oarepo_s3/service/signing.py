"""Sessions as clients see them, and their presigned part URLs.

Signing needs no S3 call and no write: URLs come from the cached signing
key of :mod:`oarepo_s3.presign` (~2 µs a URL), so they are signed when a
client reads them, never stored. Every part URL carries its part's planned
length in its signature (``Content-Length``): a signature-checking S3
refuses a larger or smaller body, so no client can store more than it
declared, whatever it sends.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from invenio_db import db
from invenio_files_rest.models import ObjectVersion

from ..api import MultipartUploadStatus
from ..errors import InvalidUploadRequest, UploadExpired, UploadNotFound, UploadStateConflict
from ..models import MultipartUploadSession, utcnow
from ..presign import SIGV4_MAX_EXPIRES, SigV4Presigner
from ..proxies import current_oarepo_s3
from ..results import UploadedPart, UploadSession
from ..sizes import expected_part_size

SessionRef = UploadSession | uuid.UUID | str
"""What the service functions accept to name a session: a snapshot or its id."""

_BASE64_MD5 = re.compile(r"^[A-Za-z0-9+/]{22}==$")
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def session_id(session: SessionRef) -> uuid.UUID:
    """The id of a session given as a snapshot, a UUID or its text. :raises UploadNotFound: not an id."""
    if isinstance(session, UploadSession):
        return session.id
    try:
        return uuid.UUID(str(session))
    except ValueError:
        raise UploadNotFound() from None


def describe(row: MultipartUploadSession) -> UploadSession:
    """A snapshot of ``row`` whose ``parts_url`` is signed when first read."""
    presigner = current_oarepo_s3.presigner
    bucket = current_oarepo_s3.s3.bucket_name(row.s3_bucket)
    cap = _lifetime_cap()
    key, upload_id, num_parts, expires = row.s3_key, row.upload_id, row.num_parts, row.expires
    size, part_size = row.size, row.part_size
    status: MultipartUploadStatus = row.status

    def sign_every_part() -> list[str]:
        if status is not MultipartUploadStatus.IN_PROGRESS or expires <= utcnow():
            return []
        numbers = range(1, num_parts + 1)
        return presigner.upload_part_urls(bucket, key, upload_id, numbers, expires_in=_lifetime(expires, cap),
                                          content_lengths=part_lengths(numbers, size, part_size))

    return UploadSession(
        id=row.id,
        upload_id=upload_id,
        s3_bucket=row.s3_bucket,
        s3_key=key,
        file_key=row.key,
        size=row.size,
        content_type=row.content_type,
        part_size=row.part_size,
        num_parts=num_parts,
        expires=expires,
        status=status,
        checksum=row.checksum,
        complete_url=row.complete_url,
        abort_url=row.abort_url,
        owner_id=row.owner_id,
        bucket_id=row.bucket_id,
        transfer=row.transfer,
        sign_parts=sign_every_part,
    )


def get_session(session: SessionRef) -> UploadSession:
    """The session as it is now in the database. :raises UploadNotFound: no such session."""
    row = db.session.get(MultipartUploadSession, session_id(session))
    if row is None:
        raise UploadNotFound()
    return describe(row)


def _lifetime_cap(setting: str = "OAREPO_S3_PART_URL_EXPIRATION") -> int:
    configured: int | None = current_oarepo_s3.app.config[setting]
    return min(configured or SIGV4_MAX_EXPIRES, SIGV4_MAX_EXPIRES)


def _lifetime(expires: datetime, cap: int) -> int:
    remaining = int((expires - utcnow()).total_seconds())
    if remaining <= 0:
        raise UploadExpired()
    return min(remaining, cap)


def url_lifetime(session: UploadSession, setting: str = "OAREPO_S3_PART_URL_EXPIRATION") -> int:
    """Seconds a part URL signed now may live: until the upload expires, capped by ``setting``.

    :raises UploadExpired: the upload's time is up.
    """
    return _lifetime(session.expires, _lifetime_cap(setting))


def ensure_in_progress(status: MultipartUploadStatus, expires: datetime) -> None:
    """Refuse what only an upload in progress may do.

    :raises UploadStateConflict: complete, aborted or expired.
    :raises UploadExpired: still in progress, but its time is up.
    """
    if status is MultipartUploadStatus.COMPLETE:
        raise UploadStateConflict("The upload is already complete.")
    if status is not MultipartUploadStatus.IN_PROGRESS:
        raise UploadStateConflict(f"The upload was {status.value}.")
    if expires <= utcnow():
        raise UploadExpired()


def sign_parts(
    session: UploadSession,
    part_numbers: Iterable[int],
    content_md5: dict[int, str] | None = None,
    content_sha256: dict[int, str] | None = None,
    *,
    lifetime_setting: str = "OAREPO_S3_PART_URL_EXPIRATION",
) -> dict[int, str]:
    """Fresh presigned UploadPart URLs for ``part_numbers`` of an upload in progress.

    :param lifetime_setting: the config key capping the URLs' lifetime (InvenioRDM's transfer
        links have their own, short one).
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
    ensure_in_progress(session.status, session.expires)
    numbers = list(part_numbers)
    num_parts = session.num_parts
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
    presigner: SigV4Presigner = current_oarepo_s3.presigner
    bucket = current_oarepo_s3.s3.bucket_name(session.s3_bucket)
    key, upload_id = session.s3_key, session.upload_id
    expires_in = url_lifetime(session, lifetime_setting)
    size, part_size = session.size, session.part_size
    plain = numbers if not md5s and not sha256s else [n for n in numbers if n not in md5s and n not in sha256s]
    urls = dict(zip(plain, presigner.upload_part_urls(bucket, key, upload_id, plain, expires_in=expires_in,
                                                      content_lengths=part_lengths(plain, size, part_size)),
                    strict=True))
    if len(plain) == len(numbers):
        return urls
    for n in wanted.difference(plain):
        urls[n] = presigner.upload_part_url(bucket, key, upload_id, n, expires_in=expires_in,
                                            content_md5=md5s.get(n), content_sha256=sha256s.get(n),
                                            content_length=expected_part_size(n, size, part_size))
    return {n: urls[n] for n in numbers}


def part_lengths(numbers: Iterable[int], size: int, part_size: int) -> list[int]:
    """The planned length of each part in ``numbers``: ``part_size``, the last one shorter."""
    last = -(-size // part_size)
    tail = size - (last - 1) * part_size
    return [part_size if n != last else tail for n in numbers]


def list_uploaded_parts(session: UploadSession) -> list[UploadedPart]:
    """The parts S3 already holds for an upload in progress (for resuming).

    :raises UploadStateConflict / UploadExpired: the upload is not in progress.
    """
    ensure_in_progress(session.status, session.expires)
    return current_oarepo_s3.s3.list_parts(session.s3_bucket, session.s3_key, session.upload_id)


def session_of(obj: ObjectVersion) -> UploadSession | None:
    """The upload session of a file version, or None when it was not uploaded directly."""
    row: MultipartUploadSession | None = obj.upload_session
    return None if row is None else describe(row)


def upload_in_progress(file_id: uuid.UUID) -> bool:
    """True while a direct upload into this FileInstance is unfinished.

    The file's own ``readable`` flag is not enough: records-resources' transfer
    marks its file readable the moment the upload starts.
    """
    found = db.session.execute(
        sa.select(MultipartUploadSession.id)
        .where(MultipartUploadSession.file_id == file_id,
               MultipartUploadSession.status == MultipartUploadStatus.IN_PROGRESS)
        .limit(1)
    ).first()
    return found is not None
