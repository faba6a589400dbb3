"""Create the oarepo_s3 alembic branch."""

revision = "5b1f0c2a9d10"
down_revision = None
branch_labels = ("oarepo_s3",)
depends_on = "dbdbc1b19cf2"


def upgrade() -> None:
    """Upgrade database."""


def downgrade() -> None:
    """Downgrade database."""
