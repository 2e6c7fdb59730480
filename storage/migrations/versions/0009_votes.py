"""Blind votes from the Chat tab: the prompt, every answer and its adapter, the shared settings and the verdict.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("prompt", sa.JSON(), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("chosen", sa.String(200), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_votes_base_model", "votes", ["base_model"])


def downgrade() -> None:
    op.drop_index("ix_votes_base_model", table_name="votes")
    op.drop_table("votes")
