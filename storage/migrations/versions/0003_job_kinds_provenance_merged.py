"""Jobs of other kinds than training (merge an adapter into its base), what each job trained on (provenance), what
a retry changed (overrides, e.g. a smaller micro-batch after running out of memory), and where an adapter's merged
model is.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="train"))
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("overrides", sa.JSON(), nullable=True))
    with op.batch_alter_table("adapters") as batch:
        batch.add_column(sa.Column("merged_path", sa.String(500), nullable=True))
        batch.add_column(sa.Column("merged_size_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adapters") as batch:
        batch.drop_column("merged_size_bytes")
        batch.drop_column("merged_path")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("overrides")
        batch.drop_column("provenance")
        batch.drop_column("kind")
