"""Ledger operations on jobs and metrics. Each takes the session first and never commits: the caller owns
the transaction (one `with db.write() as s:` per action)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.access import new_owner, visible
from storage.models import Adapter, Event, Job, JobKind, JobStatus, Metric, Sample, utcnow


def create_job(session: Session, name: str, spec: dict, priority: int = 0, kind: str = JobKind.TRAIN,
               pool: str | None = None) -> Job:
    job = Job(name=name, kind=kind, spec=spec, priority=priority, status=JobStatus.QUEUED, attempt=0, lost_count=0,
              cancel_requested=False, step=0, created_at=utcnow(), pool=pool or None, owner=new_owner())
    session.add(job)
    session.flush()
    job.queue_rank = float(job.id)  # last in line among its priority
    return job


def get_job(session: Session, job_id: int) -> Job | None:
    """The job, if it exists and whoever asks may see it (storage/access.py)."""
    return session.scalars(select(Job).where(Job.id == job_id, visible(Job.owner))).first()


def list_jobs(session: Session, limit: int = 200) -> list[Job]:
    return list(session.scalars(select(Job).where(visible(Job.owner)).order_by(Job.id.desc()).limit(limit)))


def _visible_ids(session: Session, job_ids: int | list[int]) -> list[int]:
    """Of these jobs, the ones the asker may see: metrics, samples and events are theirs through their job."""
    wanted = Job.id.in_(job_ids) if isinstance(job_ids, list) else Job.id == job_ids
    return list(session.scalars(select(Job.id).where(wanted, visible(Job.owner))))


QUEUE_ORDER = (Job.priority.desc(), Job.queue_rank, Job.id)
"""The one order of the queue: what the Runs tab shows and what workers take, highest priority first."""


def active_jobs(session: Session, mine: bool = False) -> list[Job]:
    """Jobs that are queued or running, anyone's (what they name must stay as it is); `mine`: the asker's only."""
    query = select(Job).where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
    return list(session.scalars(query.where(visible(Job.owner)) if mine else query))


def active_job_ids_of(session: Session, owner: str) -> list[int]:
    """The queued and running jobs of one person, whoever asks (an account being removed)."""
    return list(session.scalars(select(Job.id).where(Job.owner == owner,
                                                     Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))))


def active_job_named(session: Session, name: str) -> bool:
    """Whether a queued or running job, of whoever the scope sees, will publish an adapter called `name`."""
    query = select(Job.id).where(Job.name == name, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
    return session.scalars(query).first() is not None


def group_statuses(session: Session, group: str) -> list[tuple[int, str]]:
    """(id, status) of each job of a sweep the asker may see."""
    query = select(Job.id, Job.status).where(Job.group_name == group, visible(Job.owner))
    return [(row.id, row.status) for row in session.execute(query)]


def running_workers(session: Session) -> list[tuple[int, int, str | None]]:
    """(id, attempt, worker) of every running job; a worker names itself host:pid."""
    query = select(Job.id, Job.attempt, Job.worker).where(Job.status == JobStatus.RUNNING)
    return [(row.id, row.attempt, row.worker) for row in session.execute(query)]


def provenance_running_on(session: Session, host_name: str) -> list[dict | None]:
    """The provenance of each job running on this host, anyone's (None before its child records it)."""
    query = select(Job.provenance).where(Job.status == JobStatus.RUNNING, Job.worker.like(f"{host_name}:%"))
    return list(session.scalars(query))


def pinned(job: Job) -> dict:
    """What the job was pinned to at submit (dataset, eval_dataset, init_adapter, base_model), by id."""
    return (job.provenance or {}).get("pinned") or {}


def queued_jobs(session: Session) -> list[tuple[int, int]]:
    """(id, priority) of queued jobs in the order workers take them."""
    query = select(Job.id, Job.priority).where(Job.status == JobStatus.QUEUED).order_by(*QUEUE_ORDER)
    return [(row.id, row.priority) for row in session.execute(query)]


def queued_routes(session: Session) -> list[tuple[int, int, str | None]]:
    """(id, priority, pool) of queued jobs in the order workers take them: what the queue messages must cover."""
    query = select(Job.id, Job.priority, Job.pool).where(Job.status == JobStatus.QUEUED).order_by(*QUEUE_ORDER)
    return [(row.id, row.priority, row.pool) for row in session.execute(query)]


def queued_job_ids(session: Session) -> list[int]:
    """Queued jobs in the order workers take them (all of them: a queue place counts everyone's jobs ahead)."""
    return [job_id for job_id, _ in queued_jobs(session)]


def claim_job(session: Session, job_id: int, worker: str) -> int | None:
    """Take a queued job for `worker`. Returns the new attempt number, or None when someone else has it,
    it was cancelled, or it is finished (a duplicate queue message is then a no-op)."""
    now = utcnow()
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
        .values(status=JobStatus.RUNNING, attempt=Job.attempt + 1, worker=worker, heartbeat_at=now,
                started_at=func.coalesce(Job.started_at, now), error=None)
        .returning(Job.attempt)
    ).scalar_one_or_none()
    return claimed


def claim_next(session: Session, worker: str, pool: str | None = None) -> tuple[int, int] | None:
    """Take the first job in the queue's order that `worker` (serving `pool`) may run: (job id, attempt), or None
    when none is queued. A queue message only wakes a worker up; the ledger decides which job runs, so reordering
    holds. A worker runs jobs that ask for no pool, and, if it serves one, jobs that ask for its pool."""
    job = next_claimable(session, pool)
    if job is None:
        return None
    attempt = claim_job(session, job.id, worker)
    return None if attempt is None else (job.id, attempt)


def next_claimable(session: Session, pool: str | None = None, skip: tuple[int, ...] = ()) -> Job | None:
    """The first queued job in the queue's order that a worker serving `pool` may run, but for `skip` (jobs it
    cannot start now: a gang it could not reserve), locked for the caller's claim."""
    dialect = session.get_bind().dialect.name
    allowed = Job.pool.is_(None) if pool is None else or_(Job.pool.is_(None), Job.pool == pool)
    first = (select(Job).where(Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False), allowed,
                               Job.id.not_in(skip)).order_by(*QUEUE_ORDER).limit(1))
    if dialect == "postgresql":
        first = first.with_for_update(skip_locked=True)  # concurrent workers never wait on, or take, the same row
    return session.scalars(first).first()  # SQLite: BEGIN IMMEDIATE already serializes claimers


def record_gang(session: Session, job_id: int, attempt: int, gang: dict) -> bool:
    """Write a claimed attempt's gang (its nodes and rendezvous, jobs.queue.gang) into its provenance, where every
    node's worker reads it."""
    job = session.get(Job, job_id)
    if job is None or job.attempt != attempt or job.status != JobStatus.RUNNING:
        return False
    job.provenance = {**(job.provenance or {}), "gang": gang}
    return True


def running_gangs(session: Session) -> list[dict]:
    """The gang record of each running job that has one (the rendezvous ports in use)."""
    query = select(Job.provenance).where(Job.status == JobStatus.RUNNING)
    return [provenance["gang"] for provenance in session.scalars(query) if provenance and "gang" in provenance]


MOVES = ("front", "up", "down", "back")


def move_job(session: Session, job_id: int, where: str) -> list[int]:
    """Move a queued job to the front, one place up or down, or to the back of the queue, crossing priorities when
    it must (it takes the priority of the job it passes). Returns the new order of queued ids."""
    order = queued_jobs(session)
    ids = [queued_id for queued_id, _ in order]
    if job_id not in ids or not _visible_ids(session, job_id):
        raise LookupError(f"job {job_id} is not queued")
    index = ids.index(job_id)
    target = {"front": 0, "up": max(0, index - 1), "down": min(len(ids) - 1, index + 1), "back": len(ids) - 1}[where]
    if target != index:
        ids.insert(target, ids.pop(index))
        _renumber(session, ids, dict(order), moved=job_id, target=target)
    return ids


def _renumber(session: Session, ids: list[int], priorities: dict[int, int], moved: int, target: int) -> None:
    """Write ranks (and, for the moved job, a priority between its neighbours') that give exactly `ids`."""
    above = priorities[ids[target - 1]] if target > 0 else None
    below = priorities[ids[target + 1]] if target + 1 < len(ids) else None
    priority = priorities[moved]
    if above is not None and priority > above:
        priority = above
    if below is not None and priority < below:
        priority = below
    priorities[moved] = priority
    for rank, queued_id in enumerate(ids):
        values = {"queue_rank": float(rank)}
        if queued_id == moved:
            values["priority"] = priority
        session.execute(update(Job).where(Job.id == queued_id).values(**values))


def set_priority(session: Session, job_id: int, priority: int) -> None:
    job = get_job(session, job_id)
    if job is None or job.status != JobStatus.QUEUED:
        raise LookupError(f"job {job_id} is not queued")
    job.priority = priority


def _owned(job_id: int, attempt: int):
    # The attempt number fences off a stale worker: once the reaper requeues a job, the old attempt's
    # writes match no row.
    return and_(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)


@dataclass(frozen=True)
class Beat:
    still_owner: bool
    cancel_requested: bool


def heartbeat(session: Session, job_id: int, attempt: int, step: int | None = None,
              total_steps: int | None = None) -> Beat:
    """Stamp liveness (and progress when given). Tells the worker whether it still owns the job and
    whether the user asked to cancel it."""
    values: dict = {"heartbeat_at": utcnow()}
    if step is not None:
        values["step"] = step
    if total_steps is not None:
        values["total_steps"] = total_steps
    row = session.execute(
        update(Job).where(_owned(job_id, attempt)).values(**values).returning(Job.cancel_requested)
    ).scalar_one_or_none()
    return Beat(still_owner=row is not None, cancel_requested=bool(row))


def record_metrics(session: Session, job_id: int, step: int, values: dict[str, float]) -> None:
    """Insert metric rows; a row already written for (job, step, name) is kept (a resumed run repeats steps)."""
    rows = [{"job_id": job_id, "step": step, "name": name, "value": float(value), "created_at": utcnow()}
            for name, value in values.items()]
    _insert_new(session, Metric, rows, ["job_id", "step", "name"])


def record_samples(session: Session, job_id: int, step: int, answers: list[tuple[str, str]]) -> None:
    """Store (prompt, answer) pairs of one step; pairs already stored for (job, step, prompt) are kept."""
    rows = [{"job_id": job_id, "step": step, "prompt_index": index, "prompt": prompt, "answer": answer,
             "created_at": utcnow()} for index, (prompt, answer) in enumerate(answers)]
    _insert_new(session, Sample, rows, ["job_id", "step", "prompt_index"])


def _insert_new(session: Session, table, rows: list[dict], unique: list[str]) -> None:
    """Insert the rows whose `unique` columns match no stored row; the stored ones are kept (INSERT ... ON CONFLICT
    DO NOTHING, which both SQLite and PostgreSQL speak, each through its own dialect)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(table).values(rows).on_conflict_do_nothing(index_elements=unique))


def samples_for(session: Session, job_id: int) -> list[Sample]:
    query = (select(Sample).where(Sample.job_id.in_(_visible_ids(session, job_id)))
             .order_by(Sample.prompt_index, Sample.step))
    return list(session.scalars(query))


def metrics_for(session: Session, job_id: int) -> list[Metric]:
    query = select(Metric).where(Metric.job_id.in_(_visible_ids(session, job_id))).order_by(Metric.step, Metric.name)
    return list(session.scalars(query))


def metric_values(session: Session, job_id: int, name: str) -> list[float]:
    """Every value of one metric of a job, in step order."""
    query = (select(Metric.value).where(Metric.job_id.in_(_visible_ids(session, job_id)), Metric.name == name)
             .order_by(Metric.step))
    return list(session.scalars(query))


def latest_metric(session: Session, job_id: int, name: str) -> float | None:
    query = (select(Metric.value).where(Metric.job_id.in_(_visible_ids(session, job_id)), Metric.name == name)
             .order_by(Metric.step.desc()).limit(1))
    return session.scalars(query).first()


PACE_METRIC = "loss"
"""Logged at every logging step: its rows' times are the steps' clock."""


def first_step_logged(session: Session, job: Job) -> tuple[int, datetime] | None:
    """(step, when) of the first training step this attempt logged: the start of the pace an ETA is measured from
    (loading the base and the data come before it, and are over)."""
    if job.started_at is None:
        return None
    query = (select(Metric.step, Metric.created_at)
             .where(Metric.job_id == job.id, Metric.name == PACE_METRIC, Metric.created_at >= job.started_at)
             .order_by(Metric.step).limit(1))
    found = session.execute(query).first()
    return (found[0], found[1]) if found else None


def finishing_seconds(session: Session, recent: int = 5) -> list[float]:
    """For the newest `recent` succeeded jobs, the seconds from their last logged step to done: the final eval and
    sample answers, the adapter's save and its registration, which no step's pace includes."""
    last_step_at = (select(Metric.job_id, func.max(Metric.created_at).label("at"))
                    .where(Metric.name == PACE_METRIC).group_by(Metric.job_id).subquery())
    query = (select(Job.finished_at, last_step_at.c.at).join(last_step_at, Job.id == last_step_at.c.job_id)
             .where(Job.status == JobStatus.SUCCEEDED, Job.finished_at.is_not(None))
             .order_by(Job.finished_at.desc()).limit(recent))
    return [max(0.0, (finished - at).total_seconds()) for finished, at in session.execute(query)]


def latest_metrics(session: Session, job_ids: list[int], names: tuple[str, ...]) -> dict[int, dict[str, float]]:
    """The newest value of each named metric for many jobs, in one query (the Runs table refreshes often)."""
    job_ids = _visible_ids(session, list(job_ids))
    if not job_ids:
        return {}
    newest = (select(Metric.job_id, Metric.name, func.max(Metric.step).label("step"))
              .where(Metric.job_id.in_(job_ids), Metric.name.in_(names))
              .group_by(Metric.job_id, Metric.name).subquery())
    query = select(Metric.job_id, Metric.name, Metric.value).join(
        newest, and_(Metric.job_id == newest.c.job_id, Metric.name == newest.c.name, Metric.step == newest.c.step))
    found: dict[int, dict[str, float]] = {}
    for job_id, name, value in session.execute(query):
        found.setdefault(job_id, {})[name] = value
    return found


def record_provenance(session: Session, job_id: int, attempt: int, provenance: dict) -> bool:
    done = session.execute(update(Job).where(_owned(job_id, attempt)).values(provenance=provenance)
                           .returning(Job.id)).scalar_one_or_none()
    return done is not None


def succeed_job(session: Session, job_id: int, attempt: int, adapter: Adapter) -> bool:
    """Mark success and register the adapter in the same transaction. False when the attempt is stale."""
    done = session.execute(
        update(Job).where(_owned(job_id, attempt))
        .values(status=JobStatus.SUCCEEDED, finished_at=utcnow(), heartbeat_at=utcnow())
        .returning(Job.id)
    ).scalar_one_or_none()
    if done is None:
        return False
    session.add(adapter)
    session.flush()
    _event(session, job_id, JobStatus.SUCCEEDED, f"adapter '{adapter.name}' registered")
    return True


REQUEUED = "requeued"


def _event(session: Session, job_id: int, kind: str, message: str | None) -> None:
    """Record a state change in the outbox, in the transaction that makes it."""
    session.add(Event(job_id=job_id, kind=kind, message=message, created_at=utcnow(), delivery_attempts=0))


def complete_job(session: Session, job_id: int, attempt: int) -> bool:
    """Mark a job that registers no adapter (a merge) succeeded. False when the attempt is stale."""
    return _finish(session, job_id, attempt, JobStatus.SUCCEEDED, None)


def fail_job(session: Session, job_id: int, attempt: int, error: str) -> bool:
    return _finish(session, job_id, attempt, JobStatus.FAILED, error)


def cancel_running_job(session: Session, job_id: int, attempt: int) -> bool:
    """Record a stopped run: pruned when its search asked (`request_prune`), else cancelled by its person."""
    job = session.get(Job, job_id)
    if job is not None and (job.error or "").startswith(PRUNE_NOTE):
        return _finish(session, job_id, attempt, JobStatus.PRUNED, job.error)
    return _finish(session, job_id, attempt, JobStatus.CANCELLED, "Cancelled by the user.")


PRUNE_NOTE = "Pruned by its search"
"""How a running job's error column marks a prune request until the run stops. A running job's error is empty (a
claim clears it), so the mark needs no column of its own, and the stop itself takes the cancel path."""


def request_prune(session: Session, job_id: int, reason: str) -> str | None:
    """Stop a running search trial through the cancel path, to end as pruned rather than cancelled. A job already
    finished or cancelled is left as it is. Returns its status (None: no such job)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return None
    if job.status == JobStatus.RUNNING and not job.cancel_requested:
        job.cancel_requested, job.error = True, f"{PRUNE_NOTE}: {reason}"
    elif job.status == JobStatus.QUEUED:
        job.status, job.finished_at, job.error = JobStatus.PRUNED, utcnow(), f"{PRUNE_NOTE}: {reason}"
        _event(session, job_id, JobStatus.PRUNED, job.error)
    return job.status


def group_jobs(session: Session, group: str) -> list[Job]:
    """The jobs of a group (a sweep, a search's trials) the asker may see, oldest first."""
    return list(session.scalars(select(Job).where(Job.group_name == group, visible(Job.owner)).order_by(Job.id)))


def group_taken(session: Session, group: str) -> bool:
    """Whether any job, of anyone, already belongs to a group of this name."""
    return session.scalars(select(Job.id).where(Job.group_name == group).limit(1)).first() is not None


def eval_curves(session: Session, job_ids: list[int], name: str = "eval_loss") -> dict[int, list[tuple[int, float]]]:
    """(step, value) of one metric for each visible job, in step order: a search's trials overlaid."""
    ids = _visible_ids(session, list(job_ids))
    curves: dict[int, list[tuple[int, float]]] = {job_id: [] for job_id in ids}
    if not ids:
        return curves
    query = (select(Metric.job_id, Metric.step, Metric.value).where(Metric.job_id.in_(ids), Metric.name == name)
             .order_by(Metric.job_id, Metric.step))
    for job_id, step, value in session.execute(query):
        curves[job_id].append((step, value))
    return curves


def recent_run_seconds(session: Session, limit: int = 20) -> list[tuple[dict, float]]:
    """(spec, seconds from start to finish) of the newest succeeded training jobs: what one job takes here."""
    query = (select(Job.spec, Job.started_at, Job.finished_at)
             .where(Job.status == JobStatus.SUCCEEDED, Job.kind == JobKind.TRAIN, Job.started_at.is_not(None),
                    Job.finished_at.is_not(None)).order_by(Job.finished_at.desc()).limit(limit))
    return [(spec, (finished - started).total_seconds()) for spec, started, finished in session.execute(query)]


def _finish(session: Session, job_id: int, attempt: int, status: str, error: str | None) -> bool:
    done = session.execute(
        update(Job).where(_owned(job_id, attempt))
        .values(status=status, error=error, finished_at=utcnow()).returning(Job.id)
    ).scalar_one_or_none()
    if done is not None:
        _event(session, job_id, status, error)
    return done is not None


def request_cancel(session: Session, job_id: int) -> str | None:
    """Cancel a queued job at once; flag a running one for its worker. Returns the resulting status, or
    None when there is no such job."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.id not in _visible_ids(session, job_id):
        return None
    if job.status == JobStatus.QUEUED:
        job.status, job.finished_at, job.error = JobStatus.CANCELLED, utcnow(), "Cancelled before it started."
        _event(session, job_id, JobStatus.CANCELLED, job.error)
    elif job.status == JobStatus.RUNNING:
        job.cancel_requested = True
    return job.status


def requeue_lost_worker(session: Session, job_id: int, attempt: int, reason: str, max_attempts: int,
                        overrides: dict | None = None) -> str | None:
    """Give a job whose worker (or training process) was lost back to the queue, or fail it once that happened
    `max_attempts` times. `overrides` replaces what the next attempt changes. Returns the new status, or None when
    the attempt is stale (someone else already settled it: nothing changed, nothing to enqueue)."""
    job = session.get(Job, job_id)
    if job is None or job.attempt != attempt or job.status != JobStatus.RUNNING:
        return None
    if job.lost_count + 1 >= max_attempts:
        job.lost_count += 1
        _finish(session, job_id, attempt, JobStatus.FAILED, f"{reason} Gave up after {job.lost_count} lost "
                f"attempts (STUDIO_MAX_ATTEMPTS is {max_attempts}).")
        return JobStatus.FAILED
    if overrides is not None:
        job.overrides = overrides
    return _requeue(session, job_id, attempt, reason, lost=True)


def requeue_planned(session: Session, job_id: int, attempt: int, reason: str) -> str:
    """Requeue after a planned stop (worker shutdown): not a failure, so the retry limit is untouched."""
    return _requeue(session, job_id, attempt, reason, lost=False)


def _requeue(session: Session, job_id: int, attempt: int, reason: str, lost: bool) -> str:
    values: dict = {"status": JobStatus.QUEUED, "worker": None, "error": reason}
    if lost:
        values["lost_count"] = Job.lost_count + 1
    done = session.execute(update(Job).where(_owned(job_id, attempt)).values(**values).returning(Job.id))
    if done.scalar_one_or_none() is None:
        return JobStatus.RUNNING
    _event(session, job_id, REQUEUED, reason)
    return JobStatus.QUEUED


def stale_running_jobs(session: Session, lease_s: float) -> list[tuple[int, int]]:
    """(job id, attempt) of running jobs whose heartbeat is older than the lease."""
    cutoff = utcnow() - timedelta(seconds=lease_s)
    query = select(Job.id, Job.attempt).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
    return [(row.id, row.attempt) for row in session.execute(query)]

