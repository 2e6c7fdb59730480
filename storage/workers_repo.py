"""The workers' own rows: registration, heartbeat, what each runs. Session first, never commits (the caller does)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage.models import Worker, utcnow


def register_worker(session: Session, name: str, host: str, pid: int, device: str, device_name: str,
                    memory_bytes: int, pool: str | None = None, address: str | None = None,
                    rdzv_ports: str | None = None, device_count: int | None = None) -> Worker:
    session.execute(delete(Worker).where(Worker.name == name))  # a PID reused after a crash: the old row is stale
    worker = Worker(name=name, host=host, pid=pid, device=device, device_name=device_name, memory_bytes=memory_bytes,
                    pool=pool, started_at=utcnow(), heartbeat_at=utcnow(), address=address, rdzv_ports=rdzv_ports,
                    device_count=device_count)
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


def _live(lease_s: float):
    return Worker.heartbeat_at >= utcnow() - timedelta(seconds=lease_s)


def hold_for_claim(session: Session, name: str) -> bool:
    """Lock this worker's own row for the claim's transaction; False when another host's worker has reserved it for
    a gang (its `current_job_id` is set while it runs nothing): it must join that job, not claim another. Locked, so
    a leader's reservation (SKIP LOCKED) passes over a worker that is claiming, and a claim waits for a reservation
    of its row to commit: never both. A worker without a row (a test's claimer) may claim."""
    query = select(Worker.current_job_id).where(Worker.name == name)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()  # SQLite: BEGIN IMMEDIATE already serializes writers
    row = session.execute(query).first()
    return row is None or row.current_job_id is None


def reserve_gang(session: Session, job_id: int, leader: str, pool: str | None, count: int, per_host: int,
                 lease_s: float) -> list[Worker] | None:
    """Reserve `count` idle live workers of `pool`, one per host, none on the leader's host, each with a rendezvous
    address and at least `per_host` devices: their `current_job_id` becomes `job_id` in the caller's transaction.
    None, with nothing written, when fewer are free. On PostgreSQL the rows are locked with SKIP LOCKED: two leaders
    never reserve one worker, and a worker in its own claim's transaction is passed over."""
    leader_host = session.scalars(select(Worker.host).where(Worker.name == leader)).first()
    free = (_live(lease_s), Worker.pool.is_(None) if pool is None else Worker.pool == pool,
            Worker.current_job_id.is_(None), Worker.address.is_not(None), Worker.device_count >= per_host,
            Worker.name != leader, Worker.host != (leader_host or ""))
    candidates = session.execute(select(Worker.id, Worker.host).where(*free).order_by(Worker.host, Worker.id)).all()
    postgresql = session.get_bind().dialect.name == "postgresql"
    chosen: dict[str, Worker] = {}
    for worker_id, host in candidates:  # locked one by one: a lock on every candidate would hide them all
        if host in chosen:
            continue
        lock = select(Worker).where(Worker.id == worker_id, *free)
        if postgresql:
            lock = lock.with_for_update(skip_locked=True)
        if (worker := session.scalars(lock).first()) is not None:
            chosen[host] = worker
            if len(chosen) == count:
                break
    if len(chosen) < count:
        return None  # the rows locked so far are freed with the caller's transaction
    for worker in chosen.values():
        worker.current_job_id = job_id
    session.flush()
    return list(chosen.values())


def reservation(session: Session, name: str) -> int | None:
    """The job this worker's row holds: its own, or a gang's that reserved it."""
    return session.scalars(select(Worker.current_job_id).where(Worker.name == name)).first()


def release_worker(session: Session, name: str, job_id: int) -> None:
    """Free this worker of `job_id` (its own job or a gang's reservation); a later job's reservation is kept."""
    session.execute(update(Worker).where(Worker.name == name, Worker.current_job_id == job_id)
                    .values(current_job_id=None))


def member_states(session: Session, names: list[str], lease_s: float) -> dict[str, tuple[bool, int | None]]:
    """name -> (live: a heartbeat within the lease, the job its row holds) for those of `names` that have a row."""
    query = select(Worker.name, _live(lease_s), Worker.current_job_id).where(Worker.name.in_(names))
    return {name: (bool(live), job_id) for name, live, job_id in session.execute(query)}
