"""Where searches keep their state: Optuna's own RDB storage, apart from the studio's tables and Alembic history.

SQLite studio: its own file in the data dir (search/optuna.sqlite). PostgreSQL studio: the same database, in its own
schema (SEARCH_SCHEMA), so Optuna's `alembic_version` table never meets the studio's. Optuna creates and migrates its
tables itself."""

from __future__ import annotations

from sqlalchemy import create_engine, make_url, text

from storage.locks import SEARCH_SCHEMA_CREATION, hold_for_transaction
from storage.settings import Settings

SEARCH_SCHEMA = "studio_search"


def search_file(settings: Settings):
    return settings.data_dir / "search" / "optuna.sqlite"


def may_have_searches(settings: Settings) -> bool:
    """False only when no search was ever started here (a SQLite studio without its search file): the app's
    reaper then never loads Optuna."""
    return make_url(settings.database_url).get_backend_name() != "sqlite" or search_file(settings).exists()


def search_storage(settings: Settings) -> tuple[str, dict]:
    """(URL, engine keyword arguments) for Optuna's RDBStorage."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        search_file(settings).parent.mkdir(parents=True, exist_ok=True)
        # A busy timeout: the app's driver and a person's page read the file at once.
        return f"sqlite:///{search_file(settings)}", {"connect_args": {"timeout": 30}}
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            hold_for_transaction(connection, SEARCH_SCHEMA_CREATION)  # two hosts at once race in the catalog
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SEARCH_SCHEMA}"'))
    finally:
        engine.dispose()
    return url.render_as_string(hide_password=False), {
        "connect_args": {"options": f"-csearch_path={SEARCH_SCHEMA}"}, "pool_pre_ping": True}
