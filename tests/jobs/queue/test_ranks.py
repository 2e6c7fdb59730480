"""A job on several devices through the queue: the child launches two gloo ranks with torchrun's agent; killing one
rank by PID ends the group, and the job is requeued and resumes from rank 0's last complete checkpoint."""

import os
import signal
import time
from pathlib import Path

import pytest

from jobs.queue.devices import describe_device, device_count
from jobs.queue.ranks import EXIT_RANK_LOST, device_problem, outcome
from jobs.spec import SpecError
from jobs.submit import submit_job
from storage import catalog, jobs_repo
from tests.conftest import FAST_JOB, LiveStudio, process_ids

STEPS = 16  # long enough that the kill lands mid-run (a step of two ranks takes a fraction of a second here)


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


@pytest.mark.slow
def test_a_killed_rank_ends_the_group_and_the_job_resumes_from_its_checkpoint(tmp_path, demo_model_dir):
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
        job = live.wait_for(job_id, timeout_s=400)
    finally:
        live.stop_worker()
    log = _log(live, job_id)
    assert job.status == "succeeded", f"{job.error}\n{log[-3000:]}"
    assert job.attempt == 2 and job.lost_count == 1
    assert "lost rank 1 (signal 9)" in log and "resuming from checkpoint-" in log
    assert "lost one of its ranks" in live.worker_log()
    with live.studio.db.read() as s:
        logged = [m.step for m in jobs_repo.metrics_for(s, job_id) if m.name == "loss"]
        adapters = [a for a in catalog.list_adapters(s) if a.job_id == job_id]
    assert logged == list(range(1, STEPS + 1))  # rank 0 alone logged, each step once across the two attempts
    assert len(adapters) == 1 and live.studio.absolute(adapters[0].path).is_dir()


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
