"""Upload sessions: one database row per S3 multipart upload.

The row is the source of truth for completion, abort, cleanup and resume;
the ObjectVersion/FileInstance is Invenio's view of it, and S3 holds the
bytes. Rows are never deleted: a finished upload keeps its terminal status
(``complete``, ``aborted``, ``expired``) for the record.

``ObjectVersion.multipart_upload`` (a backref) leads from a file to its
session, which is what makes ``record.files[key]["multipart_upload"]`` work.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from invenio_db import db
from invenio_files_rest.models import Bucket, FileInstance, ObjectVersion
from sqlalchemy_utils.types import UUIDType

from .api import MultipartUploadStatus


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what ``UTCDateTime`` stores)."""
    return datetime.now(tz=timezone.utc)


class MultipartUploadSession(db.Model, db.Timestamp):
    """An S3 multipart upload and the file it becomes."""

    __tablename__ = "oarepo_s3_multipart_upload"
    __table_args__ = (
        sa.UniqueConstraint("s3_bucket", "upload_id", name="uq_oarepo_s3_multipart_upload_s3_upload"),
        sa.Index("ix_oarepo_s3_multipart_upload_status_expires", "status", "expires"),
    )

    id = db.Column(UUIDType, primary_key=True, default=uuid.uuid4)

    bucket_id = db.Column(UUIDType, db.ForeignKey(Bucket.id, ondelete="SET NULL"), nullable=True, index=True)
    """Invenio bucket the file belongs to."""

    version_id = db.Column(
        UUIDType, db.ForeignKey(ObjectVersion.version_id, ondelete="SET NULL"), nullable=True, unique=True
    )
    """The object version (file in the bucket); null once an aborted upload's version is removed."""

    file_id = db.Column(UUIDType, db.ForeignKey(FileInstance.id, ondelete="SET NULL"), nullable=True, index=True)

    key = db.Column(db.Text, nullable=False)
    """File name in the Invenio bucket."""

    s3_bucket = db.Column(db.String(255), nullable=False)
    s3_key = db.Column(db.Text, nullable=False)
    upload_id = db.Column(db.String(1024), nullable=False)

    content_type = db.Column(db.String(255), nullable=False)
    size = db.Column(db.BigInteger, nullable=False)
    part_size = db.Column(db.BigInteger, nullable=False)
    num_parts = db.Column(db.Integer, nullable=False)

    owner_id = db.Column(db.Integer, nullable=True, index=True)
    """User who started the upload (no foreign key: accounts are optional)."""

    expires = db.Column(db.UTCDateTime, nullable=False)
    status = db.Column(
        sa.Enum(
            MultipartUploadStatus,
            native_enum=False,
            length=16,
            values_callable=lambda enum: [e.value for e in enum],
            validate_strings=True,
        ),
        nullable=False,
        default=MultipartUploadStatus.IN_PROGRESS,
    )
    completed = db.Column(db.UTCDateTime, nullable=True)
    checksum = db.Column(db.String(255), nullable=True)

    complete_url = db.Column(db.Text, nullable=True)
    abort_url = db.Column(db.Text, nullable=True)

    object_version = db.relationship(
        ObjectVersion, backref=db.backref("multipart_upload", uselist=False), foreign_keys=[version_id]
    )
    file = db.relationship(FileInstance, foreign_keys=[file_id])

    @property
    def is_expired(self) -> bool:
        """True once the expiry time has passed (whatever the status says)."""
        return self.expires <= utcnow()

    def as_session(self, parts_url: list[str] | None = None) -> dict[str, Any]:
        """The session description clients need (the seed's ``MultipartUpload.session``).

        :param parts_url: presigned UploadPart URLs, one per part in order; the
            service signs them (see :func:`oarepo_s3.service.session_dict`).
        """
        session = {
            "id": str(self.id),
            "upload_id": self.upload_id,
            "bucket": self.s3_bucket,
            "key": self.s3_key,
            "file_key": self.key,
            "size": self.size,
            "content_type": self.content_type,
            "chunk_size": self.part_size,
            "num_chunks": self.num_parts,
            "expires": self.expires.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
            "status": self.status.value,
            "checksum": self.checksum,
            "complete_url": self.complete_url,
            "abort_url": self.abort_url,
        }
        if parts_url is not None:
            session["parts_url"] = parts_url
        return session

    def __getitem__(self, name: str) -> Any:
        """Read the session like a dict: ``record.files[key]["multipart_upload"]["upload_id"]``.

        ``parts_url`` is signed afresh on each access (valid until the upload expires).
        """
        if name == "parts_url":
            from .service import sign_all_parts

            return sign_all_parts(self)
        return self.as_session()[name]

    def keys(self) -> list[str]:
        """Keys available through ``[]``."""
        return [*self.as_session().keys(), "parts_url"]

    def __repr__(self) -> str:
        """Identify the upload in logs."""
        return f"<MultipartUploadSession {self.id} {self.key!r} {self.status.value}>"
