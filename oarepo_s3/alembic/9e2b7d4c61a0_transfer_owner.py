"""Record which transfer owns an upload's file version (InvenioRDM's multipart transfer, or oarepo-s3)."""

import sqlalchemy as sa
from alembic import op

revision = "9e2b7d4c61a0"
down_revision = "3d9a6c1e04b7"
branch_labels = ()
depends_on = None

TABLE = "oarepo_s3_multipart_upload"


def upgrade() -> None:
    """Upgrade database."""
    op.add_column(TABLE, sa.Column("transfer", sa.String(length=32), nullable=True))


def downgrade() -> None:
    """Downgrade database."""
    op.drop_column(TABLE, "transfer")
