"""The transport's queues on a real PostgreSQL server: hosts that start at the same moment all get their queue."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from jobs.queue.transport import make_huey

pytestmark = pytest.mark.slow


def test_hosts_starting_at_once_on_a_fresh_postgres_queue_all_start(postgres_server):
    # Two `create table if not exists` at once race in PostgreSQL's catalog (a UniqueViolation on pg_type): CI saw one
    # of two workers started together die of it. Eight at once, three times over, on fresh databases.
    for _ in range(3):
        url = postgres_server.new_database().replace("postgresql+psycopg://", "postgresql://")
        with ThreadPoolExecutor(8) as pool:
            queues = list(pool.map(partial(make_huey, url), [None, "big"] * 4))
        queues[0].enqueue(queues[0].task(name="noop")(lambda: None).s())
        assert len(queues[0].pending()) == 1
