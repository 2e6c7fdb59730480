"""A job on several devices through the queue: the child launches two gloo ranks with torchrun's agent; killing one
rank by PID ends the group, and the job is requeued and resumes from rank 0's last complete checkpoint; a cancel then
ends every rank and the agent, and the worker is free again."""

import os
import signal
import time
from pathlib import Path

import pytest

from jobs.queue.devices import describe_device, device_count, most_devices
from jobs.queue.lifecycle import pid_alive
from jobs.queue.ranks import EXIT_RANK_LOST, device_problem, outcome
from jobs.spec import SpecError, parse_spec
from jobs.submit import cancel_job, planned_job, submit_job
from storage import catalog, jobs_repo, workers_repo
from tests.conftest import FAST_JOB, LiveStudio, process_ids

STEPS = 200  # never reached: the job is cancelled a few steps into its second attempt
CANCEL_BOUND_S = 20.0
"""Generous over the cancel grace (6 s), as tests/jobs/queue/test_queue_e2e.py's bound is: a bound, not a timing."""


def _rank_pid(job_id: int, rank: int, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in process_ids("jobs.queue.child", "--rank", f" {job_id} "):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return pid
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} for job {job_id}")


def _log(live: LiveStudio, job_id: int) -> str:
    return (live.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text()


def _job_processes(job_id: int, attempt: int) -> list[int]:
    """The attempt's child (the agent) and its ranks: `jobs.queue.child JOB ATTEMPT` and `... --rank JOB ATTEMPT`."""
    return process_ids("jobs.queue.child", f" {job_id} {attempt}")


def _worker_free(live: LiveStudio) -> bool:
    """The worker holds no job: the devices it holds for a job are free for the next one."""
    with live.studio.db.read() as s:
        [worker] = workers_repo.live_workers(s, live.studio.settings.lease_s)
        return worker.current_job_id is None


@pytest.mark.slow
def test_a_killed_rank_ends_the_group_the_job_resumes_and_a_cancel_ends_every_rank(tmp_path, demo_model_dir):
    # No spare process: the child only launches the ranks, and a spare importing the training libraries on these two
    # cores would only slow the ranks' own imports.
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log", STUDIO_SPARE_CHILD="0")
    job_id = submit_job(live.studio, {**FAST_JOB, "devices": 2, "max_steps": STEPS, "save_steps": 2,
                                      "eval_fraction": 0, "sample_prompts": 0})
    live.start_worker()
    try:
        started = live.wait_for(job_id, statuses=("running", "succeeded", "failed"), timeout_s=300,
                                condition=lambda job: job.status != "running" or job.step >= 3)
        assert started.status == "running", f"{started.error}\n{_log(live, job_id)}"
        os.kill(_rank_pid(job_id, 1), signal.SIGKILL)
        resumed = live.wait_for(job_id, statuses=("running", "succeeded", "failed"), timeout_s=400,
                                condition=lambda job: job.status != "running" or (job.attempt == 2 and job.step >= 5))
        assert resumed.status == "running", f"{resumed.error}\n{_log(live, job_id)[-3000:]}"
        processes = _job_processes(job_id, 2)
        ranks = [_rank_pid(job_id, 0), _rank_pid(job_id, 1)]
        assert set(ranks) < set(processes) and len(processes) == 3  # the agent and its two ranks
        asked = time.monotonic()
        assert cancel_job(live.studio, job_id) == "running"
        job = live.wait_for(job_id, timeout_s=CANCEL_BOUND_S, poll_s=0.1)
        while any(pid_alive(pid) for pid in processes) and time.monotonic() - asked < CANCEL_BOUND_S:
            time.sleep(0.1)
        left = [pid for pid in processes if pid_alive(pid)]
        print(f"cancel of a 2-rank job: every process gone {time.monotonic() - asked:.1f} s after the request")
        while not (free := _worker_free(live)) and time.monotonic() - asked < CANCEL_BOUND_S:
            time.sleep(0.1)  # the worker marks itself free once it has waited for the child
    finally:
        live.stop_worker()
    log = _log(live, job_id)
    assert not left, f"still running {CANCEL_BOUND_S} s after the cancel: {left}\n{log[-3000:]}"
    assert job.status == "cancelled" and job.attempt == 2 and job.lost_count == 1, f"{job.error}\n{log[-3000:]}"
    assert free, live.worker_log()
    assert "lost rank 1 (signal 9)" in log and "lost one of its ranks" in live.worker_log()
    with live.studio.db.read() as s:
        logged = [m.step for m in jobs_repo.metrics_for(s, job_id) if m.name == "loss"]
        assert catalog.adapter_for_job(s, job_id) is None  # a cancel keeps nothing
    assert logged == list(range(1, max(logged) + 1)) and max(logged) >= 5  # rank 0 alone logged, each step once

    # Each rank's lines reach the log once, prefixed with its rank; nothing a rank wrote is there bare.
    assert log.count("[rank0]: resuming from checkpoint-") == log.count("[rank1]: resuming from checkpoint-") == 1
    for attempt in log.split("=== attempt ")[1:]:
        assert attempt.count("[rank0]: estimated peak memory") == attempt.count("[rank1]: estimated peak memory") == 1
    bare = [line for line in log.splitlines() if line.startswith(("estimated peak", "training on", "resuming from"))]
    assert bare == [], bare


def test_the_attempts_outcome_follows_the_ranks_exit_codes():
    assert outcome({1: -9, 0: 1}) == EXIT_RANK_LOST  # rank 0 failed only because its peer was gone
    assert outcome({0: 75}) == 75 and outcome({0: 3, 1: 1}) == 3  # interrupted; cancelled
    assert outcome({1: 1}) == 1


def test_a_gpu_job_needs_as_many_visible_gpus_as_devices():
    assert "devices: the job asks for 4 devices but this worker sees 2 GPU(s)" in device_problem(4, "cuda", 2)
    assert device_problem(2, "cuda", 2) is None and device_problem(8, "cpu", 0) is None


def test_a_worker_offers_its_gpus_or_its_cores():
    assert device_count("cuda-0_1_2_3", "NVIDIA H100 80GB HBM3") == 4 and device_count("default", "NVIDIA A10") == 1
    assert device_count("default", "CPU (16 cores, native bf16)") == 16


def test_more_devices_than_any_host_has_is_refused_at_submit_naming_devices(studio):
    cores = device_count("default", describe_device()[0])  # no worker registered: this machine decides
    with pytest.raises(SpecError) as refused:
        submit_job(studio, {"devices": cores + 1})
    assert [p.field for p in refused.value.problems] == ["devices"]
    assert f"asks for {cores + 1} devices, but the most one worker's host in this studio has is {cores}" in str(
        refused.value)
    with studio.db.read() as session:
        assert jobs_repo.list_jobs(session) == []  # nothing queued


def test_all_devices_is_counted_at_submit_and_the_plan_says_how_many(studio):
    cores = device_count("default", describe_device()[0])  # no worker registered: this machine decides
    assert most_devices(studio) == cores and most_devices(studio, "big") == cores  # no worker: this machine, any pool
    plan = planned_job(studio, parse_spec({"devices": "all"}))
    assert plan.spec.devices == cores and "devices" in plan.chosen and f"devices {cores}" in plan.sentence()
    job_id = submit_job(studio, {"devices": "all", "max_steps": 2})
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)
    assert job.spec["devices"] == cores and job.provenance["plan"]["chosen"]["devices"] == cores
