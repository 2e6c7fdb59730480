"""Whole jobs through the Huey queue and a real worker process: ledger rows, metrics, files, recovery."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from app import views
from jobs.queue.lifecycle import pid_alive
from jobs.queue.worker import EXIT_DEVICE_TAKEN
from jobs.run_settings.allocator import jemalloc_library
from jobs.submit import cancel_job, submit_job
from jobs.training.phases import PHASES
from storage import catalog, jobs_repo
from tests.conftest import FAST_JOB, REPO_ROOT, LiveStudio, broken_model_dir, process_ids

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
    assert {"eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "tokens_seen", "memory_bytes",
            "peak_memory_bytes"} <= {m.name for m in metrics}
    # Where the time went: every phase of the child timed once, at the last step, and the Runs tab's line adds up.
    phases = live.phases_of(job_id)  # written a moment after the status turns succeeded
    assert set(phases) == set(PHASES) and all(value >= 0 for value in phases.values())
    with live.studio.db.read() as s:
        assert {m.step for m in jobs_repo.metrics_for(s, job_id) if m.name.startswith("phase_s/")} == {4}
    wall = (job.finished_at - job.created_at).total_seconds()
    assert 0 < phases["training"] < sum(phases.values()) <= wall
    line = views.time_breakdown({**views.job_summary(job), "phases_s": phases})
    assert line.startswith("queue ") and " · training " in line and f"of {wall:.1f} s" in line, line
    with live.studio.db.read() as s:
        samples = jobs_repo.samples_for(s, job_id)
    assert sorted({sample.step for sample in samples}) == [0, 2, 4]  # the base, each eval, the end
    assert len({sample.prompt_index for sample in samples}) == 3
    assert adapter.name == "e2e" and adapter.path == f"adapters/job-{job_id}" and adapter.size_bytes > 0
    adapter_dir = live.studio.absolute(adapter.path)
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "demo-tiny-llama"  # portable: no server path
    _card_snippet_runs_as_written(adapter_dir)
    log = (live.data_dir / "runs" / f"job-{job_id}" / "train.log").read_text()
    assert "=== attempt 1" in log
    # The training process runs with jemalloc where it is installed (CI installs Debian's libjemalloc2).
    assert f"memory allocator: {'jemalloc' if jemalloc_library() else 'glibc malloc'}" in log

    base_dir = live.data_dir / "models" / "demo-tiny-llama"
    base = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32))
    model = PeftModel.from_pretrained(base, adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert model.generate(**inputs, max_new_tokens=3).shape[1] > inputs["input_ids"].shape[1]


def _card_snippet_runs_as_written(adapter_dir) -> None:
    """The model card's load snippet, copied verbatim into a fresh interpreter on the machine that trained it."""
    card = (adapter_dir / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "where the studio kept the base model" in card and "demo-tiny-llama" in card


def test_failed_job_shows_its_error_and_the_worker_takes_the_next(live, tmp_path, demo_model_dir):
    bad = submit_job(live.studio, {**FAST_JOB, "base_model": str(broken_model_dir(tmp_path, demo_model_dir))})
    good = submit_job(live.studio, FAST_JOB)
    failed = live.wait_for(bad)
    assert failed.status == "failed"
    assert failed.error.startswith(("Training failed", "Could not load")) and "Error" in failed.error
    assert live.wait_for(good).status == "succeeded"
    with live.studio.db.read() as s:
        assert catalog.adapter_for_job(s, bad) is None


CANCEL_BOUND_S = 10.0


@contextmanager
def cpu_burners(count: int = 2):
    """Busy loops on every core for the block's duration: a cancel must stay bounded under load."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def _child_pids(job_id: int) -> list[int]:
    return process_ids(f"jobs.queue.child {job_id} 1")  # a fresh child or a spare renamed for the job


def test_cancel_a_queued_and_a_running_job_within_10_s_under_load(live):
    # Evals, sample answers and checkpoint saves every 2 steps: the cancel lands in or next to one of them.
    running = submit_job(live.studio, {**FAST_JOB, "max_steps": 500})
    queued = submit_job(live.studio, FAST_JOB)
    with cpu_burners():
        live.wait_for(running, statuses=("running",), condition=lambda job: job.step >= 3)
        assert cancel_job(live.studio, queued) == "cancelled"
        asked = time.monotonic()
        assert cancel_job(live.studio, running) == "running"  # a running job is asked to stop
        job = live.wait_for(running, timeout_s=90, poll_s=0.1)
        took = time.monotonic() - asked
    assert job.status == "cancelled" and job.step < 500
    assert took < CANCEL_BOUND_S, f"cancel took {took:.1f} s; worker log:\n{live.worker_log()}"
    print(f"cancel of a running job under load: {took:.1f} s")
    with live.studio.db.read() as s:
        assert catalog.adapter_for_job(s, running) is None
        assert jobs_repo.get_job(s, queued).attempt == 0  # never started
    _until(lambda: not _child_pids(running), 10)  # the child is gone, not only the ledger row


def test_a_child_that_does_not_stop_is_killed_after_the_grace_and_recorded_cancelled(live):
    job_id = submit_job(live.studio, {**FAST_JOB, "max_steps": 500})
    live.wait_for(job_id, statuses=("running",), condition=lambda job: job.step >= 1)
    [child] = _child_pids(job_id)
    _freeze_outside_a_write(child, live.data_dir / "studio.db")  # it cannot hear the stop request: only a kill ends it
    asked = time.monotonic()
    cancel_job(live.studio, job_id)
    job = live.wait_for(job_id, timeout_s=60, poll_s=0.1)
    took = time.monotonic() - asked
    assert job.status == "cancelled" and job.error == "Cancelled by the user."
    assert live.studio.settings.cancel_grace_s <= took < CANCEL_BOUND_S, f"took {took:.1f} s:\n{live.worker_log()}"
    print(f"cancel of a frozen child: killed and recorded after {took:.1f} s")
    assert not pid_alive(child) and not _child_pids(job_id)
    assert f"job {job_id}: attempt 1: its process did not stop within" in live.worker_log()
    with live.studio.db.read() as s:
        assert catalog.adapter_for_job(s, job_id) is None


def _freeze_outside_a_write(pid: int, database) -> None:
    """SIGSTOP, but never while the process holds the ledger's write lock (a frozen writer would stall everyone,
    the worker's heartbeat included, for the busy timeout)."""
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        probe = sqlite3.connect(database, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.1)
        finally:
            probe.close()
    raise AssertionError("the child always held the write lock")


def _until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


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
    from jobs.queue.transport import pending_job_ids

    assert job_id in pending_job_ids(live.studio.settings)


def _wait_for_line(path, text: str, process, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        assert process.poll() is None, f"exited with {process.returncode}:\n{path.read_text(errors='replace')}"
        time.sleep(0.2)
    raise AssertionError(f"no '{text}' within {timeout_s} s:\n{path.read_text(errors='replace')}")


def _start_worker(env, log_path):
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "jobs.queue.worker"], env=env, cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT)


def test_one_worker_per_device_on_a_host(tmp_path, demo_model_dir):
    live = LiveStudio(tmp_path / "data", demo_model_dir, tmp_path / "first.log")
    locks = live.studio.settings.locks_dir
    assert locks == tmp_path / "data" / "hosts" / live.studio.settings.host_name / "locks"  # per host, never shared
    first = _start_worker(live.env, tmp_path / "first.log")
    others = []
    try:
        _wait_for_line(tmp_path / "first.log", "worker ready", first)  # it holds the device lock from here on
        assert (locks / "worker-default.lock").read_text().strip() == str(first.pid)
        second = _start_worker(live.env, tmp_path / "second.log")
        others.append(second)
        assert second.wait(60) == EXIT_DEVICE_TAKEN
        said = (tmp_path / "second.log").read_text()
        assert "another worker on this host already serves device 'default'" in said and "worker ready" not in said
        assert first.poll() is None

        # Another device may have its own worker beside the first.
        third = _start_worker({**live.env, "CUDA_VISIBLE_DEVICES": "1"}, tmp_path / "third.log")
        others.append(third)
        _wait_for_line(tmp_path / "third.log", "worker ready", third)
        assert (locks / "worker-cuda-1.lock").read_text().strip() == str(third.pid)
        assert first.poll() is None and third.poll() is None
    finally:
        for process in (first, *others):
            if process.poll() is None:
                process.terminate()
                process.wait(60)
