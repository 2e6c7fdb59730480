"""Accounts and owners: a `users` table (salted argon2 hashes), an `owner` on every job, dataset, adapter, vote and
prompt suite (rows made before accounts belong to the local user; bundled datasets to no one, i.e. everyone), and a
dataset's content is unique per owner rather than overall (two people may upload the same file).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

OWNED = ("jobs", "datasets", "adapters", "votes", "prompt_suites")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("max_queued_jobs", sa.Integer(), nullable=True),
        sa.Column("max_upload_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
    )
    for table in OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
            batch.create_index(f"ix_{table}_owner", ["owner"])
        # The bundled datasets (their names are reserved, so no upload holds them) are everyone's.
        bundled = " WHERE name NOT IN ('example', 'pirate')" if table == "datasets" else ""
        op.execute(f"UPDATE {table} SET owner = 'local'{bundled}")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("datasets_sha256_key", "datasets", type_="unique")
        op.create_unique_constraint("uq_datasets_owner_sha256", "datasets", ["owner", "sha256"])
    else:  # SQLite: the first schema's constraint has no name; a naming convention gives it one to drop
        with op.batch_alter_table("datasets", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}) as batch:
            batch.drop_constraint("uq_datasets_sha256", type_="unique")
            batch.create_unique_constraint("uq_datasets_owner_sha256", ["owner", "sha256"])


def downgrade() -> None:
    raise NotImplementedError("accounts cannot be undone without deciding whose rows to drop")
