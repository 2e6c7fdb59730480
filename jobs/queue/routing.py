"""Which queues wake which workers. A worker consumes one queue: `studio` when it serves no pool, `studio.<pool>`
when it does. A job that asks for a pool is sent to that pool's queue only; a job that asks for none may run on any
worker, so it is sent to `studio` and to the queue of every pool with a live worker. A duplicate message is a
no-op (the ledger's claim decides who runs what), so a copy left behind after the job started costs nothing."""

from __future__ import annotations

import logging

from jobs.queue.transport import enqueue_job, pending_job_ids
from jobs.studio import Studio
from storage import jobs_repo, workers_repo

log = logging.getLogger(__name__)


def live_pools(studio: Studio) -> set[str]:
    """Pools served by a worker whose heartbeat is within the lease."""
    with studio.db.read() as session:
        return {w.pool for w in workers_repo.live_workers(session, studio.settings.lease_s) if w.pool}


def queues_for(pool: str | None, pools: set[str]) -> list[str | None]:
    """The queues (by pool; None is `studio`) a job asking for `pool` must have a message on."""
    return [pool] if pool is not None else [None, *sorted(pools)]


def send(studio: Studio, job_id: int, priority: int, pool: str | None) -> None:
    """Wake the workers that may run this job. Call after the ledger write is committed."""
    pools = live_pools(studio) if pool is None else set()
    for queue_pool in queues_for(pool, pools):
        enqueue_job(studio.settings, job_id, priority, queue_pool)


def resync(studio: Studio) -> list[int]:
    """Re-send the messages queued ledger jobs lack (lost to a crash between the ledger write and the send, or
    dequeued by a worker that then died or took another job). Returns the ids re-sent."""
    with studio.db.read() as session:
        queued = jobs_repo.queued_routes(session)
    if not queued:
        return []
    pools = live_pools(studio)
    wanted = {queue_pool for _, _, pool in queued for queue_pool in queues_for(pool, pools)}
    pending = {queue_pool: pending_job_ids(studio.settings, queue_pool) for queue_pool in wanted}
    resent = []
    for job_id, priority, pool in queued:
        missing = [queue_pool for queue_pool in queues_for(pool, pools) if job_id not in pending[queue_pool]]
        for queue_pool in missing:
            enqueue_job(studio.settings, job_id, priority, queue_pool)
        if missing:
            resent.append(job_id)
    if resent:
        log.info("re-sent queue messages for jobs that had none: %s", resent)
    return resent
