"""The spare training process (jobs.queue.spare), with a real worker: a job runs in the process the worker started
before it, with the libraries imported already; a new spare waits after each job; a dead spare costs nothing but
its head start; the spare never outlives its worker, however the worker ends; STUDIO_SPARE_CHILD=0 turns it off."""

import os
import signal
import time

import pytest

from jobs.queue import spare
from jobs.submit import submit_job
from storage.settings import load_settings
from tests.conftest import FAST_JOB, LiveStudio, parent_of, process_ids

pytestmark = pytest.mark.slow
SPARE_LINE = "started before the job: its libraries were imported in"


def _spares_of(worker_pid: int) -> list[int]:
    return [pid for pid in process_ids("jobs.queue.child", "--spare") if parent_of(pid) == worker_pid]


def _wait_until(condition, timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def _log(live: LiveStudio, job_id: int) -> str:
    return (live.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text()


def test_a_job_runs_in_the_spare_and_the_next_spare_waits_after_it(tmp_path, demo_model_dir):
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log")
    worker = live.start_worker()
    try:
        _wait_until(lambda: _spares_of(worker.pid), what="the worker's spare")
        first_spare = _spares_of(worker.pid)[0]
        _wait_until(lambda: f"spare training process {first_spare} ready" in live.worker_log(), 120,
                    "the spare's imports")  # so the job waits for none of them
        job_id = submit_job(live.studio, FAST_JOB)
        job = live.wait_for(job_id)
        assert job.status == "succeeded", job.error
        assert SPARE_LINE in _log(live, job_id)
        phases = live.phases_of(job_id)
        assert phases["imports"] < 1.0 and phases["child_start"] < 2.0, phases  # a fresh child: several seconds
        _wait_until(lambda: _spares_of(worker.pid) and _spares_of(worker.pid)[0] != first_spare,
                    what="the next spare")
        assert first_spare not in process_ids("jobs.queue.child")  # the first one trained the job and exited
        second = submit_job(live.studio, FAST_JOB)  # the next job, in the next spare
        assert live.wait_for(second).status == "succeeded"
        assert SPARE_LINE in _log(live, second)
        spares = _spares_of(worker.pid)
    finally:
        live.stop_worker()
    _wait_until(lambda: not any(pid in process_ids("jobs.queue.child") for pid in spares), 30,
                "the spare to end with its worker (SIGTERM)")


def test_a_dead_spare_is_replaced_by_a_freshly_started_child(tmp_path, demo_model_dir):
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log")
    worker = live.start_worker()
    try:
        _wait_until(lambda: _spares_of(worker.pid), what="the worker's spare")
        os.kill(_spares_of(worker.pid)[0], signal.SIGKILL)
        job_id = submit_job(live.studio, FAST_JOB)
        job = live.wait_for(job_id)
    finally:
        live.stop_worker()
    assert job.status == "succeeded" and job.attempt == 1, job.error
    assert SPARE_LINE not in _log(live, job_id)
    assert "the spare training process had exited (-9); starting a fresh one" in live.worker_log()


def test_a_killed_worker_takes_its_waiting_spare_with_it(tmp_path, demo_model_dir):
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log")
    worker = live.start_worker()
    _wait_until(lambda: _spares_of(worker.pid), what="the worker's spare")
    spare = _spares_of(worker.pid)[0]
    live.stop_worker(kill=True)  # SIGKILL: the worker cannot stop it; the parent-death signal does
    _wait_until(lambda: spare not in process_ids("jobs.queue.child"), 30, "the orphaned spare to end")


def test_without_a_spare_each_job_starts_its_own_process(tmp_path, demo_model_dir):
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log")
    live.env["STUDIO_SPARE_CHILD"] = "0"
    live.env["STUDIO_JEMALLOC"] = "0"  # the fresh child without jemalloc; test_queue_e2e runs a spare with it
    worker = live.start_worker()
    try:
        job_id = submit_job(live.studio, FAST_JOB)
        job = live.wait_for(job_id)
        time.sleep(2)
        assert not _spares_of(worker.pid)
    finally:
        live.stop_worker()
    assert job.status == "succeeded", job.error
    assert SPARE_LINE not in _log(live, job_id)
    assert live.phases_of(job_id)["imports"] > 1.0  # the job paid for its own imports
    assert "memory allocator: glibc malloc" in _log(live, job_id)


def test_jemalloc_is_preloaded_where_installed_after_the_operators_own_preload(monkeypatch, tmp_path):
    """The worker preloads jemalloc by the same check the memory estimate reads (jobs.run_settings.allocator): the
    worker's CPU device names it, and the machine the estimate resolves for that device runs it."""
    from jobs.models.fits import Device
    from jobs.queue.devices import describe_device
    from jobs.run_settings import allocator

    library = tmp_path / "usr" / "lib" / "x86_64-linux-gnu" / "libjemalloc.so.2"
    library.parent.mkdir(parents=True)
    library.touch()
    monkeypatch.setattr(allocator, "JEMALLOC_GLOBS", (str(tmp_path / "usr/lib/*-linux-gnu/libjemalloc.so.2"),))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU, even on a machine with a GPU
    monkeypatch.setenv("LD_PRELOAD", "/opt/operator.so")
    assert spare.child_env(True)["LD_PRELOAD"] == f"/opt/operator.so {library}"
    assert "LD_PRELOAD" not in spare.child_env(False)  # STUDIO_JEMALLOC=0: the worker's own environment stands
    machines = {wanted: Device("w", describe_device(jemalloc=wanted)[0], 1).machine for wanted in (True, False)}
    assert machines[True].jemalloc and not machines[False].jemalloc
    monkeypatch.setattr(allocator, "JEMALLOC_GLOBS", (str(tmp_path / "nowhere/libjemalloc.so.2"),))
    assert "LD_PRELOAD" not in spare.child_env(True)  # not installed: glibc's malloc, nothing to preload
    assert not Device("w", describe_device(jemalloc=True)[0], 1).machine.jemalloc
    assert load_settings({"STUDIO_JEMALLOC": "0"}).jemalloc is False and load_settings({}).jemalloc is True


def test_the_switch_takes_on_and_off_words_and_names_itself_when_wrong():
    assert load_settings({"STUDIO_SPARE_CHILD": "off"}).spare_child is False
    assert load_settings({"STUDIO_SPARE_CHILD": "1"}).spare_child is True
    assert load_settings({}).spare_child is True
    with pytest.raises(ValueError, match="STUDIO_SPARE_CHILD: 'maybe' is neither on"):
        load_settings({"STUDIO_SPARE_CHILD": "maybe"})
