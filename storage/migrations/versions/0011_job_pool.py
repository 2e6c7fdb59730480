"""A job may ask for a worker pool (e.g. `a100-80g`); workers claim only jobs of their pool or of none.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("pool", sa.String(63), nullable=True))
        batch.create_index("ix_jobs_pool", ["pool"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_pool")
        batch.drop_column("pool")
