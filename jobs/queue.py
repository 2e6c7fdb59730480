"""The transport: a Huey queue carrying `run_job(job_id)`. The ledger, not the queue, is the truth (Huey
deletes a message when it is dequeued), so a lost or duplicated message is repaired by `resync_queue`."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from huey import Huey, PriorityRedisHuey, SqliteHuey

from storage.settings import Settings

log = logging.getLogger(__name__)
RUN_JOB = "run_job"


def make_huey(queue_url: str) -> Huey:
    """Huey for a queue URL: `sqlite:///file` (embedded default) or `redis://host:port/db` (multi-host)."""
    if queue_url.startswith("sqlite:///"):
        path = Path(queue_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name="studio", filename=str(path), results=False, fsync=True, timeout=30)
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        return PriorityRedisHuey(name="studio", url=queue_url, results=False)
    raise ValueError(f"STUDIO_QUEUE_URL must start with sqlite:/// or redis://, got {queue_url!r}")


def _run_job(job_id: int) -> None:
    from jobs.supervisor import supervise_job

    supervise_job(job_id)


@cache
def _queue(queue_url: str):
    huey = make_huey(queue_url)
    return huey, huey.task(name=RUN_JOB)(_run_job)


def get_queue(settings: Settings) -> Huey:
    """This process's Huey for the configured queue, with `run_job` registered."""
    return _queue(settings.queue_url)[0]


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
