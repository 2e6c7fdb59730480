"""A worker row says how the pool's other hosts reach it for one job across hosts (docs/scale-out.md): its host's
rendezvous address and port range, and how many devices (ranks) it offers one job. All nullable: a worker without an
address neither leads nor joins a gang; without a count, its device label and name say it (jobs.queue.devices).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("address", sa.String(255), nullable=True))
        batch.add_column(sa.Column("rdzv_ports", sa.String(32), nullable=True))
        batch.add_column(sa.Column("device_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("device_count")
        batch.drop_column("rdzv_ports")
        batch.drop_column("address")
