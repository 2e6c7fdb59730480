"""A queued job's place in line among jobs of its priority, so people can reorder the queue (move up, down, to the
front); workers take jobs in exactly this order.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("queue_rank", sa.Float(), nullable=False, server_default="0"))
    op.execute("UPDATE jobs SET queue_rank = id")  # the order so far: oldest first


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("queue_rank")
