"""Typed results the service hands to its doors: upload sessions and files.

Each is a frozen snapshot of what the database said when the service
answered; the session row stays the truth. Doors (views, the storage, the
seed API) serialize these and never reach for the ORM rows behind them.

An :class:`UploadSession` is also a read-only mapping with the JSON keys
clients have always seen in ``mu.session`` and
``record.files[key]["multipart_upload"]``. The one place they are listed:

=============  ============  ==================================================
key            type          meaning
=============  ============  ==================================================
id             str           the session's id (what the service functions take)
upload_id      str           S3's UploadId (original oarepo-s3 name)
bucket         str           the S3 bucket
key            str           the S3 object key
file_key       str           the file's name in the Invenio bucket
size           int           declared size of the whole file, in bytes
content_type   str           stored on the S3 object
chunk_size     int           bytes per part but the last (original name)
num_chunks     int           number of parts (original name)
expires        str           ISO 8601 UTC (``...Z``): the upload's deadline
status         str           ``in_progress``, ``complete``, ``aborted``, ``expired``
checksum       str | None    ``s3etag:<md5-of-part-md5s>-<parts>`` once complete
complete_url   str | None    where the client completes (original name)
abort_url      str | None    where the client aborts (original name)
parts_url      list[str]     presigned UploadPart URLs, part 1 first, signed when
                             first read; empty once the upload is not in progress
                             (original name)
=============  ============  ==================================================
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .api import MultipartUploadStatus

SESSION_KEYS: tuple[str, ...] = (
    "id", "upload_id", "bucket", "key", "file_key", "size", "content_type", "chunk_size", "num_chunks",
    "expires", "status", "checksum", "complete_url", "abort_url", "parts_url",
)
"""The mapping keys of :class:`UploadSession`, in the order they are listed."""


def iso_utc(value: datetime) -> str:
    """``2026-11-25T14:00:00.123456Z``: how session deadlines are written in JSON."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, eq=False)
class UploadSession(Mapping[str, Any]):
    """An S3 multipart upload and the file it becomes: typed attributes, and the JSON keys as a mapping.

    ``parts_url`` is signed by ``sign_parts`` on first read and kept: a
    session that no one asks for URLs costs no signing.
    """

    id: uuid.UUID
    upload_id: str
    s3_bucket: str
    s3_key: str
    file_key: str
    size: int
    content_type: str
    part_size: int
    num_parts: int
    expires: datetime
    status: MultipartUploadStatus
    checksum: str | None
    complete_url: str | None
    abort_url: str | None
    owner_id: int | None
    bucket_id: uuid.UUID | None
    transfer: str | None
    """Who owns the file version (see :attr:`oarepo_s3.models.MultipartUploadSession.transfer`)."""
    sign_parts: Callable[[], list[str]] = field(repr=False)
    _signed: list[list[str]] = field(default_factory=list, repr=False)

    @property
    def in_progress(self) -> bool:
        """True while parts may still be uploaded and the upload completed."""
        return self.status is MultipartUploadStatus.IN_PROGRESS

    @property
    def parts_url(self) -> list[str]:
        """Presigned UploadPart URLs for every part (signed once, on first read)."""
        if not self._signed:
            self._signed.append(self.sign_parts())
        return list(self._signed[0])

    def _value(self, name: str) -> Any:
        if name == "parts_url":
            return self.parts_url
        simple = {
            "id": str(self.id),
            "bucket": self.s3_bucket,
            "key": self.s3_key,
            "chunk_size": self.part_size,
            "num_chunks": self.num_parts,
            "expires": iso_utc(self.expires),
            "status": self.status.value,
        }
        if name in simple:
            return simple[name]
        return getattr(self, name)

    def __getitem__(self, name: str) -> Any:
        """``session["upload_id"]``: the JSON value of one key (see the module's table)."""
        if name not in SESSION_KEYS:
            raise KeyError(name)
        return self._value(name)

    def __iter__(self) -> Iterator[str]:
        """The keys of the module's table, in order."""
        return iter(SESSION_KEYS)

    def __len__(self) -> int:
        """How many keys the mapping has."""
        return len(SESSION_KEYS)

    def __contains__(self, name: object) -> bool:
        """``"upload_id" in session`` without signing anything."""
        return name in SESSION_KEYS

    def to_json(self, *, parts_url: bool = False) -> dict[str, Any]:
        """The JSON object; ``parts_url`` only when asked for (it signs every part)."""
        return {name: self._value(name) for name in SESSION_KEYS if parts_url or name != "parts_url"}

    def __repr__(self) -> str:
        """Identify the upload in logs."""
        return f"<UploadSession {self.id} {self.file_key!r} {self.status.value}>"


@dataclass(frozen=True, slots=True)
class UploadedPart:
    """A part as S3 holds it (from ListParts): number, ETag (unquoted, lower-case) and size."""

    number: int
    etag: str
    size: int


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file of a bucket: its head version's metadata and, if uploaded directly, its session."""

    key: str
    size: int
    mimetype: str | None
    checksum: str | None
    created: datetime | None
    updated: datetime | None
    session: UploadSession | None

    @property
    def pending(self) -> bool:
        """True while the file's multipart upload is not complete (it cannot be read yet)."""
        return self.session is not None and self.session.status is not MultipartUploadStatus.COMPLETE
