"""PostgreSQL advisory locks, for work that the hosts sharing one database must do one at a time. Each lock is a
64-bit key no other program takes ("qlora" in ASCII, then a number per purpose). A transaction-level lock ends with
its transaction and a session-level one with its connection, so a host that dies holding one frees it."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import psycopg
from sqlalchemy import Connection, Engine, text

_STUDIO = 0x716C6F7261 << 8
MIGRATION = _STUDIO | 1
QUEUE_TABLES = _STUDIO | 2
SEARCH_SCHEMA_CREATION = _STUDIO | 3


def hold_for_transaction(connection: Connection, key: int) -> None:
    """Wait for `key` and hold it until `connection`'s transaction ends (PostgreSQL only)."""
    connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": key})


def create_queue_tables(dsn: str, statements: list[str]) -> None:
    """Huey's own `create table if not exists` statements, one host at a time: two run at once race in PostgreSQL's
    catalog (UniqueViolation on pg_type) and the slower host's worker dies at start-up."""
    with psycopg.connect(dsn) as connection:  # one transaction, committed when the block ends
        connection.execute("select pg_advisory_xact_lock(%s)", (QUEUE_TABLES,))
        for statement in statements:
            connection.execute(statement)


def lock_key(name: str) -> int:
    """A key for a named thing (a search): 63 bits of its name's hash, apart from the fixed keys above."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1 | 1 << 62


@contextlib.contextmanager
def try_hold(engine: Engine, name: str) -> Iterator[bool]:
    """Take the lock named `name` if no host holds it, for the block's length: yields whether it was taken. On
    PostgreSQL it spans every host of the database; elsewhere (SQLite: one host) it yields True and the caller keeps
    its own per-host lock."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = lock_key(name)
    with engine.connect() as connection:
        taken = connection.execute(text("select pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
        connection.commit()
        try:
            yield bool(taken)
        finally:
            if taken:
                connection.execute(text("select pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
