"""InvenioRDM's multipart transfer (invenio-records-resources' "M") on the upload service.

records-resources' ``MultipartStorageExt`` asks the file's storage for
``multipart_initialize_upload``, ``multipart_links``,
``multipart_commit_upload``, ``multipart_abort_upload`` and
``multipart_set_content``; :class:`oarepo_s3.storage.S3FileStorage`
answers each with the function of the same name here. What differs from
invenio-s3's versions of them:

- init is a service start (:func:`oarepo_s3.service.start_upload`): quota and
  size limit checked under the bucket lock, the S3 upload created with the
  file's Content-Type, the declared size reserved in the bucket, and an
  upload-session row, so expiry, the orphan sweep, the audit and
  ``invenio oarepo-s3 uploads`` cover these uploads as any other;
- links are signed by our presigner (each part's length signed in), for
  ``OAREPO_S3_TRANSFER_LINK_EXPIRATION`` seconds, plus ``list_parts``:
  presigned ListParts URLs a client can resume from without the server;
- commit verifies parts, sizes and the final object against the plan
  before completing (a mismatch is a 400; the upload stays resumable) and
  answers the ``<md5hex>-<N>`` ETag records-resources' checksum task expects,
  computed from the verified parts when the server (Ceph) answers none;
- abort is idempotent.

Every call runs inside records-resources' own transaction
(:func:`oarepo_s3.service.in_callers_transaction`): its unit of work
commits, or rolls back (and the S3 upload just created is then aborted).
The multipart metadata records-resources stores in the file record keeps
invenio-s3's ``uploadId``, so files begun under invenio-s3's storage still
commit, abort and get links through invenio-s3's code (``session_id`` absent).
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from flask import g
from invenio_files_rest.models import FileInstance

from . import service
from .api import MultipartUpload
from .errors import InvalidUploadRequest, UploadExpired, UploadNotFound, UploadStateConflict
from .models import utcnow
from .proxies import current_oarepo_s3
from .results import UploadSession

TRANSFER = "records-resources"
"""The ``transfer`` of the sessions this door starts (see :attr:`oarepo_s3.models.MultipartUploadSession.transfer`)."""

LINK_LIFETIME_SETTING = "OAREPO_S3_TRANSFER_LINK_EXPIRATION"

LIST_PARTS_PAGE = 1000
"""S3 lists at most 1000 parts per ListParts request; one presigned link per page of part numbers."""

_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-[0-9]+$")


def is_ours(multipart_metadata: dict[str, Any]) -> bool:
    """True for metadata this module wrote; False for uploads begun under invenio-s3's storage."""
    return "session_id" in multipart_metadata


def initialize_upload(fileinstance: FileInstance, bucket_id: uuid.UUID, key: str, fileurl: str,
                      parts: int, size: int, part_size: int | None) -> dict[str, Any]:
    """Start the S3 upload of a records-resources file; return the multipart metadata it stores.

    :param part_size: None lets the parts be ``ceil(size / parts)`` bytes (the last one shorter).
    :raises InvalidUploadRequest: sizes out of range, ``parts`` not what ``size`` and
        ``part_size`` give, over the quota or size limit.
    """
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise InvalidUploadRequest("transfer.parts", "must be a positive integer")
    if part_size is None and isinstance(size, int) and not isinstance(size, bool) and size > 0:
        part_size = -(-size // parts)
    upload = MultipartUpload(key, None, None, size, part_size, content_type=None, owner_id=_current_user_id())
    if upload.num_parts != parts:
        raise InvalidUploadRequest(
            "transfer.parts",
            f"must be {upload.num_parts}: a file of {size} bytes in parts of {upload.part_size} bytes",
        )
    with service.in_callers_transaction():
        entry = service.start_upload(bucket_id, upload, into=fileinstance, fileurl=fileurl, transfer=TRANSFER)
    session = entry.session
    assert session is not None  # a start always has one
    return {
        "uploadId": session.upload_id,  # invenio-s3's name for it, so its storage can still finish the upload
        "session_id": str(session.id),
        "parts": upload.num_parts,
        "part_size": upload.part_size,
        "size": upload.size,
    }


def links(multipart_metadata: dict[str, Any]) -> dict[str, Any]:
    """Presigned part URLs (and ListParts pages) of an upload in progress; no parts once it is not.

    Links are expanded on every serialization of the file (a list of the
    record's files included), so this must never fail for an upload that
    expired or was aborted: such a file lists no parts, and its commit says why.
    """
    session = service.get_session(_session_id(multipart_metadata))
    try:
        service.ensure_in_progress(session.status, session.expires)
        lifetime = service.url_lifetime(session, LINK_LIFETIME_SETTING)
    except (UploadStateConflict, UploadExpired):
        return {"parts": [], "list_parts": []}
    expiration = (utcnow() + timedelta(seconds=lifetime)).isoformat()
    urls = service.sign_parts(session, range(1, session.num_parts + 1), lifetime_setting=LINK_LIFETIME_SETTING)
    return {
        "parts": [{"part": n, "url": url, "expiration": expiration} for n, url in urls.items()],
        "list_parts": _list_parts_urls(session, lifetime),
    }


def _list_parts_urls(session: UploadSession, lifetime: int) -> list[str]:
    """One presigned ListParts GET per 1000 part numbers (``part-number-marker`` 0, 1000, ...)."""
    presigner = current_oarepo_s3.presigner
    bucket = current_oarepo_s3.s3.bucket_name(session.s3_bucket)
    return [
        presigner.presign("GET", bucket, session.s3_key, expires_in=lifetime,
                          params={"uploadId": session.upload_id, "max-parts": str(LIST_PARTS_PAGE),
                                  "part-number-marker": str(marker)})
        for marker in range(0, session.num_parts, LIST_PARTS_PAGE)
    ]


def commit_upload(multipart_metadata: dict[str, Any]) -> str | None:
    """Verify and complete the upload; the object's multipart ETag ``<md5hex>-<N>`` (None if not MD5-based).

    :raises PartsMismatch: a part is missing or of another size (400; the upload stays resumable).
    :raises UploadExpired / UploadStateConflict: the upload expired or was aborted.
    """
    with service.in_callers_transaction():
        session = service.complete_upload(_session_id(multipart_metadata), None)
    etag = (session.checksum or "").removeprefix("s3etag:")
    return etag if _MULTIPART_ETAG.match(etag) else None


def abort_upload(multipart_metadata: dict[str, Any]) -> None:
    """Abort the S3 upload (the file is being deleted); nothing to do when it already ended."""
    with service.in_callers_transaction():
        try:
            service.abort_upload(_session_id(multipart_metadata))
        except UploadNotFound:
            pass  # already aborted or expired (the cleanup got there first): S3 holds nothing of it


def refuse_part_content() -> None:
    """Parts never pass through the server: they go straight to S3.

    :raises InvalidUploadRequest: always.
    """
    raise InvalidUploadRequest("part", "parts of a file stored in S3 are uploaded straight to S3: "
                                       "PUT each part to its links.parts[*].url")


def _session_id(multipart_metadata: dict[str, Any]) -> uuid.UUID:
    try:
        return uuid.UUID(str(multipart_metadata["session_id"]))
    except (KeyError, ValueError) as e:
        raise UploadNotFound("The file's multipart metadata names no upload session.") from e


def _current_user_id() -> int | None:
    """The requesting user's id (records-resources already checked their permission), or None."""
    identity = getattr(g, "identity", None)
    user_id = getattr(identity, "id", None)
    return user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None
