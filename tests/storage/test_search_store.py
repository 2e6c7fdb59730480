"""Searches keep their state in Optuna's own storage, never beside the studio's Alembic history: a file of their own
on SQLite, a schema of their own on PostgreSQL (many hosts)."""

import optuna

from storage.db import Database
from storage.schema import upgrade_database
from storage.search_store import SEARCH_SCHEMA, may_have_searches, search_storage
from storage.settings import load_settings


def test_on_postgresql_searches_live_in_their_own_schema(postgres_server, tmp_path):
    url = postgres_server.new_database()
    studio_db = Database(url)
    upgrade_database(studio_db)
    settings = load_settings({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_DATABASE_URL": url})
    search_url, engine_kwargs = search_storage(settings)
    storage = optuna.storages.RDBStorage(search_url, engine_kwargs=engine_kwargs)
    optuna.create_study(study_name="pg-search", storage=storage).set_user_attr("owner", "alice")
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as connection:
        tables = set(connection.execute("SELECT table_schema, table_name FROM information_schema.tables "
                                        "WHERE table_name IN ('alembic_version', 'studies')").fetchall())
    assert ("public", "alembic_version") in tables and (SEARCH_SCHEMA, "alembic_version") in tables
    assert (SEARCH_SCHEMA, "studies") in tables and ("public", "studies") not in tables
    reopened = optuna.storages.RDBStorage(*search_storage(settings)[:1], engine_kwargs=engine_kwargs)
    assert optuna.load_study(study_name="pg-search", storage=reopened).user_attrs == {"owner": "alice"}
    studio_db.dispose()


def test_on_sqlite_searches_have_their_own_file(tmp_path):
    settings = load_settings({"STUDIO_DATA_DIR": str(tmp_path)})
    assert not may_have_searches(settings)  # the app's reaper does not load Optuna for nothing
    url, engine_kwargs = search_storage(settings)
    assert url == f"sqlite:///{tmp_path / 'search' / 'optuna.sqlite'}" and url != settings.database_url
    optuna.create_study(study_name="s", storage=optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs))
    assert may_have_searches(settings)
