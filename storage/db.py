"""Engines and sessions. SQLite gets the settings design.md §3 measured; every writer begins IMMEDIATE."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# 3.51.3 fixes a WAL-reset corruption bug; older libraries work but deserve a warning.
SQLITE_WAL_FIX = (3, 51, 3)
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
    "fuse.sshfs", "sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "davfs", "fuse.davfs2",
}


def make_engine(url: str) -> Engine:
    """Create an engine; call this after fork, never share one across processes."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Take transaction control away from the sqlite3 module so the "begin" hook decides how to begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                   f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _begin_sqlite_transaction(connection) -> None:
    # A deferred read-then-write transaction fails at once with "database is locked" and ignores the busy
    # timeout; IMMEDIATE takes the write lock up front and waits for it. Readers ask for a plain BEGIN.
    mode = "BEGIN" if connection.get_execution_options().get("read_only") else "BEGIN IMMEDIATE"
    connection.exec_driver_sql(mode)


class Database:
    """One engine and its two session factories: `write()` for changes, `read()` for queries."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self.engine.execution_options(read_only=True), expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._writer.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        # Closing (not rolling back) ends the transaction without expiring loaded objects, so callers can
        # read their attributes after the block.
        with self._reader() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def sqlite_version_warning(version: tuple[int, int, int] | None = None) -> str | None:
    """A warning text when the linked SQLite predates the WAL-reset fix, else None."""
    version = version or sqlite3.sqlite_version_info
    if tuple(version) >= SQLITE_WAL_FIX:
        return None
    have = ".".join(map(str, version))
    need = ".".join(map(str, SQLITE_WAL_FIX))
    return (f"SQLite {have} (the library this Python links) predates {need}, which fixes a WAL-reset bug that can "
            f"corrupt a database several processes write at once; SQLite rates it rarer than SSD faults. For heavy "
            f"use, point STUDIO_DATABASE_URL at PostgreSQL or run a Python linked with SQLite {need} or later. "
            f"(Said once per data dir.)")


def filesystem_type(path: Path, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    """The filesystem type of the mount holding `path` (longest mount-point prefix), if known."""
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def check_sqlite_location(data_dir: Path, mounts_file: Path = Path("/proc/mounts")) -> None:
    """Refuse a data dir on a network filesystem: SQLite's locks are not reliable there."""
    fs_type = filesystem_type(data_dir, mounts_file)
    if fs_type in NETWORK_FILESYSTEMS or (fs_type or "").split(".")[-1] in NETWORK_FILESYSTEMS:
        raise RuntimeError(
            f"The data dir {data_dir} is on a network filesystem ({fs_type}). SQLite's file locks are not "
            f"reliable there and the database can corrupt. Set STUDIO_DATA_DIR to a local disk, or point "
            f"STUDIO_DATABASE_URL at PostgreSQL and STUDIO_QUEUE_URL at Redis.")
