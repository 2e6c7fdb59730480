"""Create or upgrade the schema with Alembic, so a user's database survives studio upgrades."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from storage.db import Database
from storage.locks import MIGRATION, hold_for_transaction

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_database(db: Database, revision: str = "head") -> None:
    """Bring the schema to `revision`; a no-op when it is already there."""
    config = _alembic_config()
    with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Hosts of a team started together would migrate at once and race in the catalog; one at a time, each
            # after the last has committed (the lock ends with the transaction, so a host that dies frees it).
            hold_for_transaction(connection, MIGRATION)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
