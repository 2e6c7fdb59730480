import multiprocessing
import time

import pytest

from storage import jobs_repo
from storage.access import Person, acting_as
from storage.db import Database
from storage.models import Adapter, Job, JobStatus, Metric
from storage.schema import upgrade_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Every ledger test runs on SQLite (one host) and on a real PostgreSQL server (many hosts)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'studio.db'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    database = Database(url)
    upgrade_database(database)
    database.dispose()
    return url


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    yield database
    database.dispose()


def _new_job(db, **kwargs) -> int:
    with db.write() as s:
        return jobs_repo.create_job(s, name="j", spec={"seed": 1}, **kwargs).id


def test_claim_once_then_duplicates_are_noops(db):
    job_id = _new_job(db)
    with db.write() as s:
        assert jobs_repo.claim_job(s, job_id, "w1") == 1
    with db.write() as s:
        assert jobs_repo.claim_job(s, job_id, "w2") is None
    with db.read() as s:
        job = jobs_repo.get_job(s, job_id)
    assert (job.status, job.worker, job.attempt) == (JobStatus.RUNNING, "w1", 1)


def _claim_all(url: str, worker: str, job_ids: list[int], results) -> None:
    database = Database(url)  # engines are created after fork, never inherited
    won = []
    for job_id in job_ids:
        with database.write() as s:
            if jobs_repo.claim_job(s, job_id, worker):
                won.append(job_id)
    results.put(won)


def _claim_next_until_empty(url: str, worker: str, results) -> None:
    database = Database(url)
    won = []
    while True:
        with database.write() as s:
            claimed = jobs_repo.claim_next(s, worker)
        if claimed is None:
            break
        won.append(claimed[0])
    results.put(won)


def test_concurrent_claims_across_processes_never_double_claim(db, db_url):
    job_ids = [_new_job(db) for _ in range(60)]
    results = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_claim_all, args=(db_url, f"w{i}", job_ids, results))
             for i in range(4)]
    for p in procs:
        p.start()
    won = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    claimed = [job_id for part in won for job_id in part]
    assert sorted(claimed) == job_ids  # every job claimed exactly once, no lock errors raised


def test_concurrent_claim_next_takes_each_job_once(db, db_url):
    job_ids = [_new_job(db) for _ in range(60)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    procs = [context.Process(target=_claim_next_until_empty, args=(db_url, f"w{i}", results)) for i in range(4)]
    for p in procs:
        p.start()
    won = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(job_id for part in won for job_id in part) == job_ids


def _claim_and_write(url: str, worker: str, transactions: int, results) -> None:
    """Each transaction claims the next job and writes a metric for it in the same transaction."""
    database = Database(url)
    won = []
    for _ in range(transactions):
        with database.write() as s:
            claimed = jobs_repo.claim_next(s, worker)
            if claimed is not None:
                jobs_repo.record_metrics(s, claimed[0], 1, {"claimed_by": float(worker.removeprefix("w"))})
        if claimed is not None:
            won.append(claimed[0])
    results.put((worker, won))


def test_six_writers_times_two_hundred_transactions_lose_and_duplicate_no_claim(db, db_url):
    writers, transactions = 6, 200
    with db.write() as s:
        job_ids = [jobs_repo.create_job(s, name="j", spec={}).id for _ in range(writers * transactions)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    procs = [context.Process(target=_claim_and_write, args=(db_url, f"w{i}", transactions, results))
             for i in range(writers)]
    for p in procs:
        p.start()
    won = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    claimed = [job_id for part in won.values() for job_id in part]
    assert sorted(claimed) == job_ids  # 1,200 transactions, 1,200 jobs: none lost, none claimed twice
    with db.read() as s:
        jobs = {job.id: job for job in s.query(Job)}
        marks = {m.job_id: m.value for m in s.query(Metric).filter_by(name="claimed_by")}
    for worker, ids in won.items():
        for job_id in ids:  # the ledger agrees with what each writer saw it win
            assert (jobs[job_id].status, jobs[job_id].worker, jobs[job_id].attempt) == (JobStatus.RUNNING, worker, 1)
            assert marks[job_id] == float(worker.removeprefix("w"))


def test_metrics_are_unique_per_job_step_name(db):
    job_id = _new_job(db)
    with db.write() as s:
        jobs_repo.record_metrics(s, job_id, 5, {"loss": 2.0, "learning_rate": 1e-3})
    with db.write() as s:
        jobs_repo.record_metrics(s, job_id, 5, {"loss": 9.0})  # a resumed run repeating step 5
    with db.read() as s:
        rows = s.query(Metric).filter_by(job_id=job_id, name="loss").all()
    assert [(r.step, r.value) for r in rows] == [(5, 2.0)]


def test_stale_attempt_cannot_write_results(db):
    job_id = _new_job(db)
    with db.write() as s:
        first = jobs_repo.claim_job(s, job_id, "w1")
    with db.write() as s:
        assert jobs_repo.requeue_lost_worker(s, job_id, first, "lost", max_attempts=3) == JobStatus.QUEUED
    with db.write() as s:
        second = jobs_repo.claim_job(s, job_id, "w2")
    assert second == first + 1
    adapter = Adapter(name="a", base_model="b", path="adapters/a", size_bytes=1, job_id=job_id)
    with db.write() as s:
        assert not jobs_repo.succeed_job(s, job_id, first, adapter)
        assert not jobs_repo.heartbeat(s, job_id, first).still_owner
    with db.write() as s:
        assert jobs_repo.succeed_job(s, job_id, second, adapter)
    with db.read() as s:
        assert jobs_repo.get_job(s, job_id).status == JobStatus.SUCCEEDED


def test_cancel_queued_at_once_and_running_by_flag(db):
    queued, running = _new_job(db), _new_job(db)
    with db.write() as s:
        attempt = jobs_repo.claim_job(s, running, "w1")
    with db.write() as s:
        assert jobs_repo.request_cancel(s, queued) == JobStatus.CANCELLED
        assert jobs_repo.request_cancel(s, running) == JobStatus.RUNNING
        assert jobs_repo.request_cancel(s, 999) is None
    with db.write() as s:
        assert jobs_repo.heartbeat(s, running, attempt).cancel_requested
        assert jobs_repo.claim_job(s, queued, "w2") is None  # a cancelled job's message is a no-op


def test_stale_heartbeats_are_found_and_attempts_are_limited(db):
    job_id = _new_job(db)
    with db.write() as s:
        attempt = jobs_repo.claim_job(s, job_id, "w1")
    time.sleep(0.05)
    with db.read() as s:
        assert jobs_repo.stale_running_jobs(s, lease_s=0.01) == [(job_id, attempt)]
        assert jobs_repo.stale_running_jobs(s, lease_s=60) == []
    with db.write() as s:
        assert jobs_repo.requeue_lost_worker(s, job_id, attempt, "lost.", max_attempts=1) == JobStatus.FAILED
    with db.read() as s:
        assert "Gave up after 1 lost attempts (STUDIO_MAX_ATTEMPTS is 1)" in jobs_repo.get_job(s, job_id).error


def test_planned_requeues_do_not_use_up_the_retry_limit(db):
    job_id = _new_job(db)
    for _ in range(5):  # five worker restarts while it ran
        with db.write() as s:
            attempt = jobs_repo.claim_job(s, job_id, "w")
            assert jobs_repo.requeue_planned(s, job_id, attempt, "shutdown") == JobStatus.QUEUED
    with db.write() as s:
        attempt = jobs_repo.claim_job(s, job_id, "w")
        assert jobs_repo.requeue_lost_worker(s, job_id, attempt, "lost.", max_attempts=2) == JobStatus.QUEUED
    with db.write() as s:
        attempt = jobs_repo.claim_job(s, job_id, "w")
        assert jobs_repo.requeue_lost_worker(s, job_id, attempt, "lost.", max_attempts=2) == JobStatus.FAILED
    with db.read() as s:
        job = jobs_repo.get_job(s, job_id)
    assert (job.attempt, job.lost_count) == (7, 2)


def test_queue_order_is_priority_then_age(db):
    low, high, low2 = _new_job(db, priority=0), _new_job(db, priority=5), _new_job(db, priority=0)
    with db.read() as s:
        assert jobs_repo.queued_job_ids(s) == [high, low, low2]


def test_moves_reorder_the_queue_and_claims_follow_it(db):
    a, b, c, d = (_new_job(db, priority=p) for p in (0, 0, 5, 0))
    with db.write() as s:
        assert jobs_repo.queued_job_ids(s) == [c, a, b, d]
        assert jobs_repo.move_job(s, d, "front") == [d, c, a, b]
        assert jobs_repo.get_job(s, d).priority == 5  # it passed a priority-5 job, so it took that priority
        assert jobs_repo.move_job(s, a, "back") == [d, c, b, a]
        assert jobs_repo.move_job(s, b, "up") == [d, b, c, a]
        assert jobs_repo.move_job(s, d, "down") == [b, d, c, a]
        assert jobs_repo.move_job(s, b, "up") == [b, d, c, a]  # already first: nothing moves
    with db.read() as s:
        assert jobs_repo.queued_job_ids(s) == [b, d, c, a]  # what was written is what is read back
    claimed = []
    for worker in ("w1", "w2", "w3", "w4", "w5"):
        with db.write() as s:
            claimed.append(jobs_repo.claim_next(s, worker))
    assert [c[0] for c in claimed[:4]] == [b, d, c, a] and claimed[4] is None
    with db.write() as s, pytest.raises(LookupError, match="not queued"):
        jobs_repo.move_job(s, a, "front")


def test_a_cancelled_job_is_never_claimed(db):
    first, second = _new_job(db), _new_job(db)
    with db.write() as s:
        jobs_repo.request_cancel(s, first)
    with db.write() as s:
        assert jobs_repo.claim_next(s, "w")[0] == second


def test_latest_metrics_for_many_jobs(db):
    first, second = _new_job(db), _new_job(db)
    with db.write() as s:
        jobs_repo.record_metrics(s, first, 1, {"loss": 3.0, "eval_loss": 3.5})
        jobs_repo.record_metrics(s, first, 2, {"loss": 2.0})
        jobs_repo.record_metrics(s, second, 1, {"loss": 9.0, "grad_norm": 1.0})
    with db.read() as s:
        latest = jobs_repo.latest_metrics(s, [first, second], ("loss", "eval_loss"))
    assert latest == {first: {"loss": 2.0, "eval_loss": 3.5}, second: {"loss": 9.0}}


def test_an_active_job_holds_its_name_until_it_ends(db):
    queued, running = _new_job(db), _new_job(db)
    with db.write() as s:
        jobs_repo.get_job(s, queued).name, jobs_repo.get_job(s, running).name = "queued-one", "running-one"
        jobs_repo.claim_job(s, running, "w1")
    with db.write() as s:
        assert jobs_repo.active_job_named(s, "queued-one") and jobs_repo.active_job_named(s, "running-one")
        assert not jobs_repo.active_job_named(s, "never")
        jobs_repo.request_cancel(s, queued)
    with db.read() as s:
        assert not jobs_repo.active_job_named(s, "queued-one")


def test_running_jobs_are_found_with_their_workers_and_provenance_by_host(db):
    here, there, _queued = _new_job(db), _new_job(db), _new_job(db)  # a queued job runs nowhere
    with db.write() as s:
        attempt = jobs_repo.claim_job(s, here, "studio-a:41")
        jobs_repo.claim_job(s, there, "studio-b:7")
        jobs_repo.record_provenance(s, here, attempt, {"memory_estimate_bytes": 5})
    with db.read() as s:
        assert sorted(jobs_repo.running_workers(s)) == [(here, 1, "studio-a:41"), (there, 1, "studio-b:7")]
        assert jobs_repo.provenance_running_on(s, "studio-a") == [{"memory_estimate_bytes": 5}]
        assert jobs_repo.provenance_running_on(s, "studio-b") == [None]  # its child has not recorded it yet


def test_a_sweeps_jobs_are_read_as_the_asker_sees_them(db):
    with acting_as(Person("ann")):
        ann = [_new_job(db), _new_job(db)]
    with acting_as(Person("bob")):
        bob = _new_job(db)
    with db.write() as s:
        for job_id in [*ann, bob]:
            jobs_repo.get_job(s, job_id).group_name = "sweep-1"
        jobs_repo.request_cancel(s, ann[1])
    with acting_as(Person("ann")), db.read() as s:
        assert sorted(jobs_repo.group_statuses(s, "sweep-1")) == [(ann[0], JobStatus.QUEUED),
                                                                 (ann[1], JobStatus.CANCELLED)]
        assert jobs_repo.group_statuses(s, "sweep-2") == []
    with db.read() as s:  # unscoped (the CLI): everyone's
        assert len(jobs_repo.group_statuses(s, "sweep-1")) == 3


def test_a_pruned_run_ends_pruned_through_the_cancel_path(db):
    """A search's prune request is the cancel flag plus a mark; the run's own stop then records "pruned", while a
    person's cancel of another run still records "cancelled"."""
    pruned, cancelled = _new_job(db), _new_job(db)
    with db.write() as s:
        attempts = {job_id: jobs_repo.claim_job(s, job_id, "w1") for job_id in (pruned, cancelled)}
    with db.write() as s:
        assert jobs_repo.request_prune(s, pruned, "held-out loss 7.2 at step 2") == JobStatus.RUNNING
        assert jobs_repo.request_cancel(s, cancelled) == JobStatus.RUNNING
        assert jobs_repo.heartbeat(s, pruned, attempts[pruned]).cancel_requested  # the worker stops it as a cancel
    with db.write() as s:
        for job_id, attempt in attempts.items():
            assert jobs_repo.cancel_running_job(s, job_id, attempt)
    with db.read() as s:
        assert jobs_repo.get_job(s, pruned).status == JobStatus.PRUNED
        assert jobs_repo.get_job(s, pruned).error.startswith(jobs_repo.PRUNE_NOTE)
        assert jobs_repo.get_job(s, cancelled).status == JobStatus.CANCELLED
    with db.write() as s:  # a finished run is left as it ended
        assert jobs_repo.request_prune(s, cancelled, "late") == JobStatus.CANCELLED
