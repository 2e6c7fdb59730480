"""People kept apart: server-side sign-in sessions (so removing an account, a password change or an expiry ends them
at once), an audit log, presets owned like suites, per-person secrets (a hub token) encrypted at rest, and
per-account limits on disk use and dataset count; an account can be disabled without being removed.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("max_storage_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_datasets", sa.Integer(), nullable=True))
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_name", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("client", sa.String(100), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False, index=True),
        sa.Column("actor", sa.String(64), nullable=True, index=True),
        sa.Column("action", sa.String(40), nullable=False, index=True),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("client", sa.String(100), nullable=True, index=True),
        sa.Column("detail", sa.JSON(), nullable=True),
    )
    op.create_table(
        "presets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_presets_owner_name"),
    )
    op.create_table(
        "secrets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("hint", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("owner", "kind", name="uq_secrets_owner_kind"),
    )


def downgrade() -> None:
    for table in ("secrets", "presets", "audit_log", "sessions"):
        op.drop_table(table)
    with op.batch_alter_table("users") as batch:
        for column in ("max_datasets", "max_storage_bytes", "disabled_at"):
            batch.drop_column(column)
