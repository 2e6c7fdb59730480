"""A job on several devices through the queue: the child launches two gloo ranks with torchrun's agent. A worker's
SIGTERM stops every rank at a checkpoint and requeues the attempt; killing one rank by PID ends the group, and the
job is requeued and resumes from rank 0's last complete checkpoint; a cancel ends every rank and the agent, and the
worker is free again."""

import os
import re
import signal
import time
from pathlib import Path

import pytest

from jobs.queue.devices import describe_device, device_count, most_devices
from jobs.queue.lifecycle import pid_alive
from jobs.queue.ranks import EXIT_RANK_LOST, device_problem, outcome, peer_lost
from jobs.spec import SpecError, parse_spec
from jobs.submit import cancel_job, planned_job, submit_job
from storage import catalog, jobs_repo, workers_repo
from tests.conftest import FAST_JOB, LiveStudio, process_ids

STEPS = 200  # never reached: the job is cancelled a few steps into its second attempt
CANCEL_BOUND_S = 20.0
"""Generous over the cancel grace (6 s), as tests/jobs/queue/test_queue_e2e.py's bound is: a bound, not a timing."""


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _job_processes(live: LiveStudio, job_id: int, attempt: int) -> list[int]:
    """This studio's processes of the attempt: its child (the agent), `jobs.queue.child JOB ATTEMPT`, and its ranks,
    `... --rank JOB ATTEMPT` (by the data dir in their environment: other tests on this machine run job 1 too)."""
    mine = f"STUDIO_DATA_DIR={live.data_dir}".encode()
    return [pid for pid in process_ids("jobs.queue.child", f" {job_id} {attempt}") if mine in _environ(pid)]


def _rank_pid(live: LiveStudio, job_id: int, rank: int, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in process_ids("jobs.queue.child", "--rank", f" {job_id} "):
            environ = _environ(pid)
            if f"RANK={rank}".encode() in environ and f"STUDIO_DATA_DIR={live.data_dir}".encode() in environ:
                return pid
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} for job {job_id}")


def _log(live: LiveStudio, job_id: int) -> str:
    return (live.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text()


def _worker_free(live: LiveStudio) -> bool:
    """The worker holds no job: the devices it holds for a job are free for the next one."""
    with live.studio.db.read() as s:
        [worker] = workers_repo.live_workers(s, live.studio.settings.lease_s)
        return worker.current_job_id is None


@pytest.mark.slow
def test_a_worker_stop_a_killed_rank_and_a_cancel_each_end_every_rank_of_a_job(tmp_path, demo_model_dir):
    """One 2-rank job through three attempts: its worker stops (SIGTERM: the ranks checkpoint, the attempt is
    requeued uncounted), rank 1 is killed (the group ends, the attempt is requeued as lost), then it is cancelled."""
    # No spare process: the child only launches the ranks, and a spare importing the training libraries on these two
    # cores would only slow the ranks' own imports.
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log", STUDIO_SPARE_CHILD="0")
    job_id = submit_job(live.studio, {**FAST_JOB, "devices": 2, "max_steps": STEPS, "save_steps": 100,
                                      "eval_fraction": 0, "sample_prompts": 0})

    def running(attempt: int, step: int):
        job = live.wait_for(job_id, statuses=("running", "succeeded", "failed"), timeout_s=400,
                            condition=lambda job: job.status != "running" or (job.attempt == attempt
                                                                               and job.step >= step))
        assert job.status == "running", f"{job.error}\n{_log(live, job_id)[-3000:]}"
        return job

    live.start_worker()
    try:
        running(1, 2)
        first = _job_processes(live, job_id, 1)
        live.stop_worker()  # SIGTERM, as systemctl stop sends it
        with live.studio.db.read() as s:
            stopped = jobs_repo.get_job(s, job_id)
        assert (stopped.status, stopped.attempt, stopped.lost_count) == ("queued", 1, 0), stopped.error
        assert len(first) == 3 and not [pid for pid in first if pid_alive(pid)]  # the agent and both ranks
        live.start_worker()
        interrupted_at = running(2, stopped.step + 1).step
        os.kill(_rank_pid(live, job_id, 1), signal.SIGKILL)
        running(3, interrupted_at + 2)
        processes = _job_processes(live, job_id, 3)
        ranks = [_rank_pid(live, job_id, 0), _rank_pid(live, job_id, 1)]
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
    assert job.status == "cancelled" and job.attempt == 3 and job.lost_count == 1, f"{job.error}\n{log[-3000:]}"
    assert free, live.worker_log()
    assert "the ranks were stopped (SIGTERM)" in log
    assert "lost rank 1 (signal 9)" in log and "lost one of its ranks" in live.worker_log()
    with live.studio.db.read() as s:
        logged = [m.step for m in jobs_repo.metrics_for(s, job_id) if m.name == "loss"]
        assert catalog.adapter_for_job(s, job_id) is None  # a cancel keeps nothing
    assert logged == list(range(1, max(logged) + 1)) and max(logged) > interrupted_at  # rank 0 alone, each step once

    # Attempts 2 and 3 resume from the checkpoint the stop wrote (save_steps is past the run), and each rank's lines
    # reach the log once, prefixed with its rank; nothing a rank wrote is there bare.
    resumed = {rank: re.findall(rf"^\[rank{rank}\]: resuming from (checkpoint-\d+)", log, re.M) for rank in (0, 1)}
    assert resumed[0] == resumed[1] == [resumed[0][0]] * 2, log[-3000:]
    for attempt in log.split("=== attempt ")[1:]:
        assert attempt.count("[rank0]: estimated peak memory") == attempt.count("[rank1]: estimated peak memory") == 1
    bare = [line for line in log.splitlines() if line.startswith(("estimated peak", "training on", "resuming from"))]
    assert bare == [], bare


def test_the_attempts_outcome_follows_the_ranks_exit_codes():
    assert outcome({1: -9, 0: 1}) == EXIT_RANK_LOST  # rank 0 failed only because its peer was gone
    assert outcome({0: EXIT_RANK_LOST}) == EXIT_RANK_LOST  # ... on another host: rank 0 said so (peer_lost)
    gone = RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:44242.")
    try:
        raise ValueError("Training failed.") from gone
    except ValueError as wrapped:
        assert peer_lost(wrapped) and not peer_lost(ValueError("dataset row 3 has no messages"))
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
