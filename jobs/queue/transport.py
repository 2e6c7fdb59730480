"""The transport: Huey queues carrying `run_job(job_id)`, one queue per worker pool (`studio`, `studio.<pool>`).
The ledger, not the queue, is the truth (Huey deletes a message when it is dequeued), so a lost or duplicated
message is repaired by `jobs.queue.routing.resync`.

This module knows nothing of what running a job means: a worker hands it the function with `serve_jobs`, so
the supervisor can import the transport (to re-send requeued jobs) without an import circle."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from huey import Huey, PostgresHuey, PriorityRedisHuey, SqliteHuey

from storage.locks import create_queue_tables
from storage.settings import Settings

RUN_JOB = "run_job"
JobRunner = Callable[[int], None]
_runner: list[JobRunner] = []  # set once, by the worker process that consumes the queue


def queue_name(pool: str | None) -> str:
    """The Huey queue of a pool; jobs that ask for no pool travel on `studio`."""
    return "studio" if pool is None else f"studio.{pool}"


def make_huey(queue_url: str, pool: str | None = None) -> Huey:
    """Huey for a queue URL: `sqlite:///file` (embedded default), `redis://host:port/db` or
    `postgresql://user@host:port/db` (many hosts). Every one of them honours message priority."""
    name = queue_name(pool)
    if queue_url.startswith("sqlite:///"):
        path = Path(queue_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name=name, filename=str(path), results=False, fsync=True, timeout=30)
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        return PriorityRedisHuey(name=name, url=queue_url, results=False)
    if queue_url.startswith(("postgresql://", "postgres://")):
        # Waits on LISTEN/NOTIFY rather than polling; its tables (huey_task, ...) sit beside nothing of ours.
        huey = PostgresHuey(name=name, dsn=queue_url, results=False, create_tables=False)
        create_queue_tables(queue_url, huey.storage.ddl)  # one host at a time: storage.locks says why
        return huey
    raise ValueError(f"STUDIO_QUEUE_URL must start with sqlite:///, redis:// or postgresql://, got {queue_url!r}")


def run_job(job_id: int) -> None:
    if not _runner:
        raise RuntimeError("run_job is executed only by a worker (jobs.queue.worker), which sets its runner")
    _runner[0](job_id)


# Huey names a message "<function's module>.<task name>"; pin it to the name queues written before the move into
# jobs/queue/ hold ("jobs.queue.run_job"), so an upgrade finds their messages runnable.
run_job.__module__ = "jobs.queue"


@cache
def _queue(queue_url: str, pool: str | None):
    huey = make_huey(queue_url, pool)
    return huey, huey.task(name=RUN_JOB)(run_job)


def get_queue(settings: Settings, pool: str | None = None) -> Huey:
    """This process's Huey for a pool's queue, with `run_job` registered."""
    return _queue(settings.queue_url, pool)[0]


def serve_jobs(settings: Settings, runner: JobRunner) -> Huey:
    """The Huey a worker consumes (its pool's queue), executing each `run_job` message with `runner`."""
    _runner[:] = [runner]
    return get_queue(settings, settings.pool)


def enqueue_job(settings: Settings, job_id: int, priority: int = 0, pool: str | None = None) -> None:
    """One wake-up message for `job_id` on a pool's queue. `jobs.queue.routing.send` picks the queues."""
    _queue(settings.queue_url, pool)[1](job_id, priority=priority)


def pending_job_ids(settings: Settings, pool: str | None = None) -> set[int]:
    return {task.args[0] for task in get_queue(settings, pool).pending() if task.name == RUN_JOB and task.args}
