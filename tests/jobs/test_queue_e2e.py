"""Whole jobs through the Huey queue and a real worker process: ledger rows, metrics, files, recovery."""

import time

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from jobs.submit import cancel_job, submit_job
from storage import catalog, jobs_repo
from tests.conftest import FAST_JOB, LiveStudio, broken_model_dir

pytestmark = pytest.mark.slow


def test_job_runs_through_queue_and_worker(live):
    job_id = submit_job(live.studio, {**FAST_JOB, "name": "e2e"})
    job = live.wait_for(job_id)
    assert job.status == "succeeded", job.error
    assert job.attempt == 1 and job.worker and job.finished_at and job.step == 4 and job.total_steps == 4
    with live.studio.db.read() as s:
        metrics = jobs_repo.metrics_for(s, job_id)
        adapter = catalog.adapter_for_job(s, job_id)
    losses = [m for m in metrics if m.name == "loss"]
    assert [m.step for m in losses] == [1, 2, 3, 4]
    assert {"eval_loss", "learning_rate", "grad_norm", "tokens_per_s"} <= {m.name for m in metrics}
    assert adapter.name == "e2e" and adapter.path == "adapters/e2e" and adapter.size_bytes > 0
    adapter_dir = live.studio.absolute(adapter.path)
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    assert "=== attempt 1" in (live.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text()

    base_dir = live.data_dir / "models" / "demo-tiny-llama"
    base = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32))
    model = PeftModel.from_pretrained(base, adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert model.generate(**inputs, max_new_tokens=3).shape[1] > inputs["input_ids"].shape[1]


def test_failed_job_shows_its_error_and_the_worker_takes_the_next(live, tmp_path, demo_model_dir):
    bad = submit_job(live.studio, {**FAST_JOB, "base_model": str(broken_model_dir(tmp_path, demo_model_dir))})
    good = submit_job(live.studio, FAST_JOB)
    failed = live.wait_for(bad)
    assert failed.status == "failed"
    assert failed.error.startswith(("Training failed", "Could not load")) and "Error" in failed.error
    assert live.wait_for(good).status == "succeeded"
    with live.studio.db.read() as s:
        assert catalog.adapter_for_job(s, bad) is None


def test_cancel_a_queued_and_a_running_job(live):
    running = submit_job(live.studio, {**FAST_JOB, "max_steps": 500})
    queued = submit_job(live.studio, FAST_JOB)
    live.wait_for(running, statuses=("running",), condition=lambda job: job.step >= 1)
    assert cancel_job(live.studio, queued) == "cancelled"
    assert cancel_job(live.studio, running) == "running"  # a running job is asked to stop
    job = live.wait_for(running, timeout_s=90)
    assert job.status == "cancelled" and job.step < 500
    with live.studio.db.read() as s:
        assert catalog.adapter_for_job(s, running) is None
        assert jobs_repo.get_job(s, queued).attempt == 0  # never started


def test_killed_worker_job_resumes_from_checkpoint_on_restart(tmp_path, demo_model_dir):
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log")
    job_id = submit_job(live.studio, {**FAST_JOB, "max_steps": 12, "save_steps": 2, "eval_fraction": 0})
    live.start_worker()
    live.wait_for(job_id, statuses=("running",), condition=lambda job: job.step >= 5, timeout_s=240)
    live.stop_worker(kill=True)  # kill -9: Huey's message is gone; only the ledger knows
    time.sleep(1)
    live.start_worker()  # sees a dead local worker holding the job and requeues it at once
    try:
        job = live.wait_for(job_id, timeout_s=300)
    finally:
        live.stop_worker()
    assert job.status == "succeeded", job.error
    assert job.attempt == 2
    log = (tmp_path / "data" / "runs" / f"job-{job_id}" / "train.log").read_text()
    assert "=== attempt 2" in log
    with live.studio.db.read() as s:
        steps = [m.step for m in jobs_repo.metrics_for(s, job_id) if m.name == "loss"]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # no duplicated or lost steps


def test_graceful_worker_stop_requeues_without_losing_the_job(tmp_path, demo_model_dir):
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log")
    job_id = submit_job(live.studio, {**FAST_JOB, "max_steps": 400, "save_steps": 1000, "eval_fraction": 0})
    live.start_worker()
    live.wait_for(job_id, statuses=("running",), condition=lambda job: job.step >= 2, timeout_s=240)
    live.stop_worker()  # SIGTERM: the child checkpoints, the job goes back to the queue
    with live.studio.db.read() as s:
        job = jobs_repo.get_job(s, job_id)
    assert job.status == "queued", live.worker_log()
    assert (tmp_path / "data" / "runs" / f"job-{job_id}" / "checkpoints").is_dir()
    from jobs.queue import pending_job_ids

    assert job_id in pending_job_ids(live.studio.settings)


def test_one_worker_per_device_on_a_host(tmp_path, demo_model_dir):
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "worker.log")
    first = live.start_worker()
    try:
        time.sleep(3)
        second = live.start_worker()
        assert second.wait(60) == 3  # EXIT_DEVICE_TAKEN
        assert first.poll() is None
        assert "already serves device" in live.worker_log()
        live.worker = first
    finally:
        live.stop_worker()
    other_gpu = {**live.env, "CUDA_VISIBLE_DEVICES": "1"}  # another device may have its own worker
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    third = subprocess.Popen([sys.executable, "-m", "jobs.worker"], env=other_gpu, cwd=REPO_ROOT)
    try:
        time.sleep(4)
        assert third.poll() is None
    finally:
        third.terminate()
        third.wait(60)
