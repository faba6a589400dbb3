"""Record the cleanup's failures per upload (attempts, last error, when to try again)."""

import sqlalchemy as sa
from alembic import op
from invenio_db.shared import UTCDateTime

revision = "3d9a6c1e04b7"
down_revision = "7c4e2d91ab35"
branch_labels = ()
depends_on = None

TABLE = "oarepo_s3_multipart_upload"


def upgrade() -> None:
    """Upgrade database."""
    op.add_column(TABLE, sa.Column("cleanup_attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column(TABLE, sa.Column("cleanup_error", sa.Text(), nullable=True))
    op.add_column(TABLE, sa.Column("cleanup_retry_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    """Downgrade database."""
    op.drop_column(TABLE, "cleanup_retry_at")
    op.drop_column(TABLE, "cleanup_error")
    op.drop_column(TABLE, "cleanup_attempts")
