"""The workers' own rows: registration, heartbeat, what each runs. Session first, never commits (the caller does)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import Worker, utcnow


def register_worker(session: Session, name: str, host: str, pid: int, device: str, device_name: str,
                    memory_bytes: int, pool: str | None = None) -> Worker:
    session.execute(delete(Worker).where(Worker.name == name))  # a PID reused after a crash: the old row is stale
    worker = Worker(name=name, host=host, pid=pid, device=device, device_name=device_name, memory_bytes=memory_bytes,
                    pool=pool, started_at=utcnow(), heartbeat_at=utcnow())
    session.add(worker)
    session.flush()
    return worker


def worker_heartbeat(session: Session, name: str, current_job_id: int | None = None, busy: bool | None = None,
                     idle_memory_bytes: int | None = None) -> None:
    """`idle_memory_bytes`: the memory a job may use on the worker's device now, kept only while it holds no job
    (during one, the job's own use is not free memory for the next)."""
    worker = session.scalars(select(Worker).where(Worker.name == name)).first()
    if worker is None:
        return
    worker.heartbeat_at = utcnow()
    if idle_memory_bytes is not None and worker.current_job_id is None:
        worker.memory_bytes = idle_memory_bytes
    if busy is not None:
        worker.current_job_id = current_job_id if busy else None


def unregister_worker(session: Session, name: str) -> None:
    session.execute(delete(Worker).where(Worker.name == name))


def live_workers(session: Session, lease_s: float) -> list[Worker]:
    """Workers whose heartbeat is within the lease, by host and device."""
    cutoff = utcnow() - timedelta(seconds=lease_s)
    query = select(Worker).where(Worker.heartbeat_at >= cutoff).order_by(Worker.host, Worker.device)
    return list(session.scalars(query))
