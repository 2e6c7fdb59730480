"""A job's pinned local base says `local_path`, not `path`: Gradio's client takes any dict with a string `path` in
an API answer for a file to download, so one job on a local base made /list_jobs and /get_job fail (403) for
everyone. Rewrites the pins already stored.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

JOBS = sa.table("jobs", sa.column("id", sa.Integer), sa.column("provenance", sa.JSON))


def upgrade() -> None:
    _rename("path", "local_path")


def downgrade() -> None:
    _rename("local_path", "path")


def _rename(old: str, new: str) -> None:
    connection = op.get_bind()
    for job_id, provenance in connection.execute(sa.select(JOBS.c.id, JOBS.c.provenance)).all():
        base = ((provenance or {}).get("pinned") or {}).get("base_model")
        if isinstance(base, dict) and old in base:
            base[new] = base.pop(old)
            connection.execute(sa.update(JOBS).where(JOBS.c.id == job_id).values(provenance=provenance))
