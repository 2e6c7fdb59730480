"""Advisory locks on a real PostgreSQL server: one host at a time, across hosts, and freed when a host dies."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine

from storage.locks import lock_key, try_hold

pytestmark = pytest.mark.slow


def test_a_named_lock_is_held_by_one_host_at_a_time_and_freed_when_it_dies(postgres_server):
    url = postgres_server.new_database()
    host_a, host_b = create_engine(url), create_engine(url)
    with (try_hold(host_a, "search:s1") as a_took, try_hold(host_b, "search:s1") as b_took,
          try_hold(host_b, "search:s2") as b_took_other):
        assert (a_took, b_took, b_took_other) == (True, False, True)
    with try_hold(host_b, "search:s1") as b_took:
        assert b_took  # released when host A's block ended
    holding = host_a.connect()  # host A takes the lock, then dies without releasing it
    holding.exec_driver_sql(f"select pg_advisory_lock({lock_key('search:s1')})")
    with try_hold(host_b, "search:s1") as b_took:
        assert not b_took
    holding.connection.dbapi_connection.close()  # its connection ends, as a killed process's does
    assert _taken_within(host_b, "search:s1", seconds=10)
    host_b.dispose()


def _taken_within(engine, name: str, seconds: float) -> bool:
    """The server ends a closed connection's backend (and frees its locks) a moment after the client goes."""
    deadline = time.monotonic() + seconds
    while True:
        with try_hold(engine, name) as took:
            if took or time.monotonic() > deadline:
                return took
        time.sleep(0.05)


def test_on_sqlite_the_lock_is_left_to_the_host(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'studio.sqlite'}")
    with try_hold(engine, "search:s1") as first, try_hold(engine, "search:s1") as second:
        assert first and second  # one host: the caller's own file lock decides
