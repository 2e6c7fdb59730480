"""The transport: a Huey queue carrying `run_job(job_id)`. The ledger, not the queue, is the truth (Huey
deletes a message when it is dequeued), so a lost or duplicated message is repaired by `resync_queue`.

This module knows nothing of what running a job means: a worker hands it the function with `serve_jobs`, so
the supervisor can import the transport (to re-send requeued jobs) without an import circle."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from pathlib import Path

from huey import Huey, PriorityRedisHuey, SqliteHuey

from storage.settings import Settings

log = logging.getLogger(__name__)
RUN_JOB = "run_job"
JobRunner = Callable[[int], None]
_runner: list[JobRunner] = []  # set once, by the worker process that consumes the queue


def make_huey(queue_url: str) -> Huey:
    """Huey for a queue URL: `sqlite:///file` (embedded default) or `redis://host:port/db` (multi-host)."""
    if queue_url.startswith("sqlite:///"):
        path = Path(queue_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name="studio", filename=str(path), results=False, fsync=True, timeout=30)
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        return PriorityRedisHuey(name="studio", url=queue_url, results=False)
    raise ValueError(f"STUDIO_QUEUE_URL must start with sqlite:/// or redis://, got {queue_url!r}")


def run_job(job_id: int) -> None:
    if not _runner:
        raise RuntimeError("run_job is executed only by a worker (jobs.queue.worker), which sets its runner")
    _runner[0](job_id)


# Huey names a message "<function's module>.<task name>"; pin it to the name queues written before the move into
# jobs/queue/ hold ("jobs.queue.run_job"), so an upgrade finds their messages runnable.
run_job.__module__ = "jobs.queue"


@cache
def _queue(queue_url: str):
    huey = make_huey(queue_url)
    return huey, huey.task(name=RUN_JOB)(run_job)


def get_queue(settings: Settings) -> Huey:
    """This process's Huey for the configured queue, with `run_job` registered."""
    return _queue(settings.queue_url)[0]


def serve_jobs(settings: Settings, runner: JobRunner) -> Huey:
    """The Huey a worker consumes, executing each `run_job` message with `runner`."""
    _runner[:] = [runner]
    return get_queue(settings)


def enqueue_job(settings: Settings, job_id: int, priority: int = 0) -> None:
    _queue(settings.queue_url)[1](job_id, priority=priority)


def pending_job_ids(settings: Settings) -> set[int]:
    return {task.args[0] for task in get_queue(settings).pending() if task.name == RUN_JOB and task.args}


def resync_queue(settings: Settings, queued_ids: list[int], priorities: dict[int, int]) -> list[int]:
    """Enqueue a message for every queued ledger job that has none (lost to a crash between the ledger
    write and the enqueue, or dequeued by a worker that then died). Returns the ids enqueued."""
    have = pending_job_ids(settings)
    missing = [job_id for job_id in queued_ids if job_id not in have]
    for job_id in missing:
        enqueue_job(settings, job_id, priorities.get(job_id, 0))
    if missing:
        log.info("re-enqueued jobs without a queue message: %s", missing)
    return missing
