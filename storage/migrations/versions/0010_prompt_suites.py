"""Prompt suites (prompts with optional reference answers) and their results, one row per (suite, base model,
pane, prompt).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_suites",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("prompts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "suite_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("suite_id", sa.Integer(), sa.ForeignKey("prompt_suites.id", ondelete="CASCADE"), nullable=False),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("pane", sa.String(300), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=True),
        sa.Column("prompt_index", sa.Integer(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("reference_loglik", sa.Float(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("suite_id", "base_model", "pane", "prompt_index", name="uq_suite_results_cell"),
    )
    op.create_index("ix_suite_results_suite_id", "suite_results", ["suite_id"])


def downgrade() -> None:
    op.drop_index("ix_suite_results_suite_id", table_name="suite_results")
    op.drop_table("suite_results")
    op.drop_table("prompt_suites")
