"""Create the multipart upload session table."""

import sqlalchemy as sa
import sqlalchemy_utils
from alembic import op
from invenio_db.shared import UTCDateTime

revision = "7c4e2d91ab35"
down_revision = "5b1f0c2a9d10"
branch_labels = ()
# files-rest's head at the time (files_bucket, files_object, files_files exist).
depends_on = "08e4a71525b6"

STATUSES = ("in_progress", "complete", "aborted", "expired")


def upgrade() -> None:
    """Upgrade database."""
    op.create_table(
        "oarepo_s3_multipart_upload",
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.Column("id", sqlalchemy_utils.types.uuid.UUIDType(), nullable=False),
        sa.Column("bucket_id", sqlalchemy_utils.types.uuid.UUIDType(), nullable=True),
        sa.Column("version_id", sqlalchemy_utils.types.uuid.UUIDType(), nullable=True),
        sa.Column("file_id", sqlalchemy_utils.types.uuid.UUIDType(), nullable=True),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("s3_bucket", sa.String(length=255), nullable=False),
        sa.Column("s3_key", sa.Text(), nullable=False),
        sa.Column("upload_id", sa.String(length=1024), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("part_size", sa.BigInteger(), nullable=False),
        sa.Column("num_parts", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("expires", UTCDateTime(), nullable=False),
        sa.Column("status", sa.Enum(*STATUSES, native_enum=False, length=16, create_constraint=False), nullable=False),
        sa.Column("completed", UTCDateTime(), nullable=True),
        sa.Column("checksum", sa.String(length=255), nullable=True),
        sa.Column("complete_url", sa.Text(), nullable=True),
        sa.Column("abort_url", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bucket_id"], ["files_bucket.id"], name=op.f("fk_oarepo_s3_multipart_upload_bucket_id_files_bucket"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files_files.id"], name=op.f("fk_oarepo_s3_multipart_upload_file_id_files_files"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["files_object.version_id"],
            name=op.f("fk_oarepo_s3_multipart_upload_version_id_files_object"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oarepo_s3_multipart_upload")),
        sa.UniqueConstraint("s3_bucket", "upload_id", name="uq_oarepo_s3_multipart_upload_s3_upload"),
        sa.UniqueConstraint("version_id", name=op.f("uq_oarepo_s3_multipart_upload_version_id")),
    )
    op.create_index(
        op.f("ix_oarepo_s3_multipart_upload_bucket_id"), "oarepo_s3_multipart_upload", ["bucket_id"]
    )
    op.create_index(op.f("ix_oarepo_s3_multipart_upload_file_id"), "oarepo_s3_multipart_upload", ["file_id"])
    op.create_index(op.f("ix_oarepo_s3_multipart_upload_owner_id"), "oarepo_s3_multipart_upload", ["owner_id"])
    op.create_index(
        "ix_oarepo_s3_multipart_upload_status_expires", "oarepo_s3_multipart_upload", ["status", "expires"]
    )


def downgrade() -> None:
    """Downgrade database."""
    op.drop_table("oarepo_s3_multipart_upload")
