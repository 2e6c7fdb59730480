"""Pools: which queue a job's message travels on, which worker may claim it, and what the memory verdict checks.
Real SQLite ledger and real Huey queues (the embedded transport); the scale-out tests run the same on Redis and
PostgreSQL with worker processes."""

import os

import pytest

from app import views
from app.train.memory_panel import verdict_text
from jobs.queue import routing
from jobs.queue.devices import job_devices as devices
from jobs.queue.transport import get_queue, pending_job_ids
from jobs.spec import SpecError
from jobs.submit import submit_job
from storage import jobs_repo, workers_repo
from storage.settings import load_settings
from tests.conftest import FAST_JOB

GIB = 1 << 30


def _worker(studio, name: str, pool: str | None, memory_gib: float = 64) -> None:
    with studio.db.write() as session:
        workers_repo.register_worker(session, f"{name}:1", name, 1, "default", "GPU", int(memory_gib * GIB), pool)


def _claim(studio, worker: str, pool: str | None) -> int | None:
    with studio.db.write() as session:
        claimed = jobs_repo.claim_next(session, worker, pool)
    return claimed and claimed[0]


def test_messages_go_to_the_queues_of_the_workers_that_may_run_the_job(studio):
    _worker(studio, "gpu-host", "a100-80g")
    anywhere = submit_job(studio, {**FAST_JOB, "name": "anywhere"})
    on_a100 = submit_job(studio, {**FAST_JOB, "name": "on-a100", "pool": "a100-80g"})
    on_h100 = submit_job(studio, {**FAST_JOB, "name": "on-h100", "pool": "h100"})  # no worker serves it yet
    settings = studio.settings
    assert pending_job_ids(settings) == {anywhere}
    assert pending_job_ids(settings, "a100-80g") == {anywhere, on_a100}
    assert pending_job_ids(settings, "h100") == {on_h100}
    with studio.db.read() as session:
        jobs = jobs_repo.list_jobs(session)
    assert {job.id: job.pool for job in jobs} == {anywhere: None, on_a100: "a100-80g", on_h100: "h100"}
    progress = {job.id: views.progress_text(job) for job in jobs}  # what the Runs tab's queue says
    assert progress == {anywhere: "", on_a100: "waits for pool a100-80g", on_h100: "waits for pool h100"}

    get_queue(settings, "a100-80g").flush()  # a worker dequeued both messages, then died
    assert routing.resync(studio) == [anywhere, on_a100]
    assert pending_job_ids(settings, "a100-80g") == {anywhere, on_a100}
    assert routing.resync(studio) == []  # nothing is missing now: no duplicates piled up


def test_a_worker_claims_jobs_of_its_pool_and_of_none_in_queue_order(studio):
    on_h100 = submit_job(studio, {**FAST_JOB, "name": "on-h100", "pool": "h100"})
    on_a100 = submit_job(studio, {**FAST_JOB, "name": "on-a100", "pool": "a100-80g"})
    anywhere = submit_job(studio, {**FAST_JOB, "name": "anywhere"})
    assert _claim(studio, "cpu-host:1", None) == anywhere  # a worker without a pool skips pooled jobs
    assert _claim(studio, "cpu-host:1", None) is None
    assert _claim(studio, "a100-host:1", "a100-80g") == on_a100
    assert _claim(studio, "a100-host:1", "a100-80g") is None  # never another pool's job
    assert _claim(studio, "h100-host:1", "h100") == on_h100


def test_a_bad_pool_name_is_refused_with_the_field_named(studio):
    with pytest.raises(SpecError) as caught:
        submit_job(studio, {**FAST_JOB, "pool": "A100 80G"})
    assert [p.field for p in caught.value.problems] == ["pool"]
    assert "not a pool name" in caught.value.problems[0].message
    assert pending_job_ids(studio.settings) == set()
    with pytest.raises(ValueError, match="STUDIO_POOL"):
        load_settings({"STUDIO_DATA_DIR": "/tmp/x", "STUDIO_POOL": "no spaces allowed"})


def test_the_memory_verdict_checks_the_devices_of_the_pool_the_job_asks_for(studio):
    _worker(studio, "small-host", "t4", memory_gib=0.25)
    _worker(studio, "big-host", "a100-80g", memory_gib=80)
    assert [d.label for d in devices(studio)] == ["big-host default", "small-host default"]
    assert [d.label for d in devices(studio, "t4")] == ["small-host default"]
    assert devices(studio, "h100") == []
    on_t4 = verdict_text(studio, {**FAST_JOB, "pool": "t4"})
    assert "small-host" in on_t4 and "big-host" not in on_t4
    nowhere = verdict_text(studio, {**FAST_JOB, "pool": "h100"})
    assert "no live worker serves pool `h100`" in nowhere and "STUDIO_POOL=h100" in nowhere


def test_host_name_and_scratch_dir_come_from_the_environment(tmp_path):
    settings = load_settings({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_HOST_NAME": "gpu-7"})
    assert settings.host_name == "gpu-7"
    assert settings.locks_dir == tmp_path / "hosts" / "gpu-7" / "locks"  # hosts sharing a data dir never share locks
    scratch = tmp_path / "local-disk"
    settings = load_settings({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_SCRATCH_DIR": str(scratch)})
    assert settings.host_name == os.uname().nodename and settings.locks_dir == scratch / "locks"
