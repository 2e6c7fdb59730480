"""Requeues jobs whose worker vanished, and re-sends queue messages the ledger says are missing."""

from __future__ import annotations

import logging
import socket

from jobs.queue.lifecycle import pid_alive
from jobs.queue.transport import enqueue_job, resync_queue
from jobs.studio import Studio
from storage import jobs_repo
from storage.models import Job, JobStatus

log = logging.getLogger(__name__)


def _requeue(studio: Studio, lost: list[tuple[int, int]], reason: str) -> None:
    for job_id, attempt in lost:
        with studio.db.write() as session:
            status = jobs_repo.requeue_lost_worker(session, job_id, attempt, reason,
                                                   studio.settings.max_attempts)
            priority = session.get(Job, job_id).priority
        log.warning("job %s attempt %s: %s -> %s", job_id, attempt, reason, status)
        if status == JobStatus.QUEUED:
            enqueue_job(studio.settings, job_id, priority)


def reap_stale_jobs(studio: Studio) -> None:
    with studio.db.read() as session:
        stale = jobs_repo.stale_running_jobs(session, studio.settings.lease_s)
    _requeue(studio, stale, f"Worker stopped sending heartbeats for {studio.settings.lease_s:.0f} s; requeued.")


def reap_dead_local_workers(studio: Studio) -> None:
    """Jobs held by a worker process on this host that no longer exists: requeue now, not after the lease."""
    host = socket.gethostname()
    with studio.db.read() as session:
        running = session.query(Job.id, Job.attempt, Job.worker).filter(Job.status == JobStatus.RUNNING).all()
    dead = []
    for job_id, attempt, worker in running:
        worker_host, _, pid = (worker or "").rpartition(":")
        if worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
            dead.append((job_id, attempt))
    _requeue(studio, dead, "Its worker process on this host exited; requeued.")


def resync(studio: Studio) -> None:
    with studio.db.read() as session:
        queued = jobs_repo.queued_jobs(session)
    resync_queue(studio.settings, [job_id for job_id, _ in queued], dict(queued))


def reap_once(studio: Studio) -> None:
    reap_dead_local_workers(studio)
    reap_stale_jobs(studio)
    resync(studio)
