"""Requeues jobs whose worker vanished, and re-sends queue messages the ledger says are missing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from jobs.queue import routing
from jobs.queue.lifecycle import pid_alive
from jobs.studio import Studio
from storage import jobs_repo
from storage.models import JobStatus

log = logging.getLogger(__name__)


def _requeue(studio: Studio, lost: list[tuple[int, int]], reason: str) -> None:
    for job_id, attempt in lost:
        with studio.db.write() as session:
            status = jobs_repo.requeue_lost_worker(session, job_id, attempt, reason,
                                                   studio.settings.max_attempts)
            job = jobs_repo.get_job(session, job_id)  # unscoped here: the reaper acts for no one
            priority, pool = job.priority, job.pool
        if status is None:
            continue  # another reaper (the app's, a worker's) settled it first
        log.warning("job %s attempt %s: %s -> %s", job_id, attempt, reason, status)
        if status == JobStatus.QUEUED:
            routing.send(studio, job_id, priority, pool)


def reap_stale_jobs(studio: Studio) -> None:
    with studio.db.read() as session:
        stale = jobs_repo.stale_running_jobs(session, studio.settings.lease_s)
    _requeue(studio, stale, f"Worker stopped sending heartbeats for {studio.settings.lease_s:.0f} s; requeued.")


def reap_dead_local_workers(studio: Studio) -> None:
    """Jobs held by a worker process on this host that no longer exists: requeue now, not after the lease."""
    host = studio.settings.host_name
    with studio.db.read() as session:
        running = jobs_repo.running_workers(session)
    dead = []
    for job_id, attempt, worker in running:
        worker_host, _, pid = (worker or "").rpartition(":")
        if worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
            dead.append((job_id, attempt))
    _requeue(studio, dead, "Its worker process on this host exited; requeued.")


def resync(studio: Studio) -> None:
    routing.resync(studio)


def reap_once(studio: Studio) -> None:
    reap_dead_local_workers(studio)
    reap_stale_jobs(studio)
    resync(studio)


def reap_forever(studio: Studio, stop: threading.Event, interval_s: float,
                 also: Callable[[], None] | None = None) -> None:
    """Reaper passes until `stop` is set (and `also` each time: a worker stamps its own heartbeat). Runs in every
    worker and in the app, so a stale job is requeued even when no worker is alive on its host."""
    while not stop.wait(interval_s):
        try:
            reap_once(studio)
            if also is not None:
                also()
        except Exception:  # a reaper hiccup (database busy, Redis blip) must not end its process
            log.exception("reaper pass failed; retrying next interval")


def reap_interval_s(settings) -> float:
    """STUDIO_REAP_S, else a third of the lease: a stale job waits at most about a lease and a third."""
    return settings.reap_interval_s or max(1.0, settings.lease_s / 3)


def start_reaper(studio: Studio, interval_s: float, also: Callable[[], None] | None = None) -> threading.Event:
    """A daemon reaper thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=reap_forever, args=(studio, stop, interval_s, also), daemon=True, name="reaper").start()
    return stop
