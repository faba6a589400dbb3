"""Upload sessions: one database row per S3 multipart upload.

The row is the source of truth for completion, abort, cleanup and resume;
the ObjectVersion/FileInstance is Invenio's view of it, and S3 holds the
bytes. Rows are never deleted: a finished upload keeps its terminal status
(``complete``, ``aborted``, ``expired``) for the record.

``ObjectVersion.upload_session`` (a backref) leads from a file to its row;
the service turns rows into :class:`~oarepo_s3.results.UploadSession`
snapshots, which is what ``record.files[key]["multipart_upload"]`` returns
(see :mod:`oarepo_s3.files`). Rows hold data only: no signing, no S3.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from invenio_db import db
from invenio_files_rest.models import Bucket, FileInstance, ObjectVersion
from sqlalchemy_utils.types import UUIDType

from .api import MultipartUploadStatus


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what ``UTCDateTime`` stores)."""
    return datetime.now(tz=UTC)


class MultipartUploadSession(db.Model, db.Timestamp):  # type: ignore[misc]  # invenio-db is untyped
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

    transfer = db.Column(db.String(32), nullable=True)
    """Who owns the file version: None, oarepo-s3 (abort and expiry remove the pending file);
    ``records-resources`` (InvenioRDM's multipart transfer: its file record holds the version, so
    abort and expiry leave the version, unreadable, and the size it reserves to records-resources'
    own delete)."""

    cleanup_attempts = db.Column(db.Integer, nullable=False, default=0, server_default="0")
    """Times the cleanup failed to expire this upload (S3 refused, the books were inconsistent...)."""
    cleanup_error = db.Column(db.Text, nullable=True)
    """The cleanup's last error for this upload, for operators (``invenio oarepo-s3 uploads list --failing``)."""
    cleanup_retry_at = db.Column(db.UTCDateTime, nullable=True)
    """The cleanup passes this upload over until then (backoff after a failure)."""

    object_version = db.relationship(
        ObjectVersion, backref=db.backref("upload_session", uselist=False), foreign_keys=[version_id]
    )
    file = db.relationship(FileInstance, foreign_keys=[file_id])

    def __repr__(self) -> str:
        """Identify the upload in logs."""
        return f"<MultipartUploadSession {self.id} {self.key!r} {self.status.value}>"
