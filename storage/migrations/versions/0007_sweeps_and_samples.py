"""Sweeps (a group of jobs submitted together) and sample generations (a run's answers to held-out prompts at each
eval, beside the base model's).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("group_name", sa.String(100), nullable=True))
        batch.create_index("ix_jobs_group_name", ["group_name"])
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("prompt_index", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "step", "prompt_index", name="uq_samples_job_step_prompt"),
    )


def downgrade() -> None:
    op.drop_table("samples")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_group_name")
        batch.drop_column("group_name")
