import sqlite3

import pytest
from sqlalchemy import text

from storage.db import Database, check_sqlite_location, filesystem_type, sqlite_version_warning
from storage.models import Dataset, Job
from storage.schema import current_revision, head_revision, upgrade_database


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    upgrade_database(database)
    yield database
    database.dispose()


def test_sqlite_connection_settings(db):
    with db.read() as session:
        pragmas = {name: session.execute(text(f"PRAGMA {name}")).scalar() for name in
                   ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30000}


def test_writers_begin_immediate_readers_do_not(db, tmp_path):
    other = sqlite3.connect(tmp_path / "studio.db", timeout=0, isolation_level=None)
    with db.write() as session:
        session.execute(text("SELECT 1"))  # an IMMEDIATE transaction holds the write lock even before writing
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    with db.read() as session:
        session.execute(text("SELECT 1"))
        other.execute("BEGIN IMMEDIATE")  # a reader does not block writers
        other.execute("ROLLBACK")


def test_migrations_reach_head_and_are_idempotent(db):
    assert current_revision(db) == head_revision()
    with db.write() as session:
        session.add(Job(name="kept", spec={}, status="queued", priority=0, attempt=0, cancel_requested=False, step=0))
    upgrade_database(db)  # an upgrade over an existing database keeps its rows
    with db.read() as session:
        assert session.query(Job).one().name == "kept"


def test_upgrade_from_the_first_schema_keeps_jobs(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_database(database, "0001")
    with database.write() as session:
        session.execute(text("INSERT INTO jobs (name, status, spec, priority, attempt, cancel_requested, step, "
                             "created_at) VALUES ('old', 'queued', '{}', 0, 2, 0, 0, '2026-01-01 00:00:00')"))
        for name in ("example", "mine"):
            session.execute(text("INSERT INTO datasets (name, path, format, rows, sha256, created_at) VALUES "
                                 f"('{name}', 'datasets/x.jsonl', 'messages', 1, '{name}', '2026-01-01 00:00:00')"))
    upgrade_database(database)
    with database.read() as session:
        job = session.query(Job).one()
        owners = {d.name: d.owner for d in session.query(Dataset)}
    assert (job.name, job.attempt, job.lost_count, job.kind, job.provenance) == ("old", 2, 0, "train", None)
    assert job.owner == "local" and job.pool is None  # what predates accounts is the local user's
    assert owners == {"example": None, "mine": "local"}  # a bundled dataset is everyone's
    assert current_revision(database) == head_revision() == "0015"
    database.dispose()


def test_old_sqlite_gets_a_warning():
    assert "3.51.3" in sqlite_version_warning((3, 40, 1))
    assert sqlite_version_warning((3, 51, 3)) is None


def test_network_filesystem_is_refused(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/export {tmp_path}/nfs nfs4 rw 0 0\n")
    (tmp_path / "nfs" / "data").mkdir(parents=True)
    assert filesystem_type(tmp_path / "nfs" / "data", mounts) == "nfs4"
    with pytest.raises(RuntimeError, match="network filesystem"):
        check_sqlite_location(tmp_path / "nfs" / "data", mounts)
    check_sqlite_location(tmp_path, mounts)  # a local disk is fine


def test_a_pinned_local_base_is_renamed_local_path_both_ways(tmp_path):
    """Gradio's client takes a dict with a string "path" in an API answer for a file (a 403 for every job list)."""
    database = Database(f"sqlite:///{tmp_path / 'pins.db'}")
    upgrade_database(database, "0013")
    pins = {"pinned": {"base_model": {"name": "/m/base", "path": "/m/base"}, "dataset": {"id": 1}}, "seed": 1}
    with database.write() as session:
        session.add(Job(name="local", spec={}, status="succeeded", priority=0, attempt=1, cancel_requested=False,
                        step=0, provenance=pins))
        session.add(Job(name="none", spec={}, status="queued", priority=0, attempt=0, cancel_requested=False, step=0))
    upgrade_database(database)
    with database.read() as session:
        rows = {job.name: job.provenance for job in session.query(Job)}
    assert rows["local"]["pinned"] == {"base_model": {"name": "/m/base", "local_path": "/m/base"}, "dataset": {"id": 1}}
    assert rows["local"]["seed"] == 1 and rows["none"] is None
    from alembic import command

    from storage.schema import _alembic_config

    config = _alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0013")
    with database.read() as session:
        assert session.query(Job).filter_by(name="local").one().provenance["pinned"]["base_model"]["path"] == "/m/base"
    database.dispose()



@pytest.mark.slow
def test_hosts_migrating_a_fresh_postgres_database_at_once_all_succeed(postgres_server):
    # Every host of a team migrates at start-up; started together on a fresh database, their `create table`s race.
    # Processes, as hosts are (Alembic's context is one per process).
    import subprocess
    import sys

    url = postgres_server.new_database()
    migrate = ("import sys; from storage.db import Database; from storage.schema import upgrade_database; "
               "upgrade_database(Database(sys.argv[1]))")
    hosts = [subprocess.Popen([sys.executable, "-c", migrate, url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    failures = [host.stderr.read() for host in hosts if host.wait(timeout=120) != 0]
    assert not failures, failures[0]
    database = Database(url)
    assert current_revision(database) == head_revision()
    database.dispose()
