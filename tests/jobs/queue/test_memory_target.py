"""A memory target on real jobs (issue 34): a sweep over memory_budget_gib on the demo model queues three jobs whose
plans chose different levers, and each job's MEASURED peak (the child's `peak_memory_bytes`, its whole resident set:
Python and torch included, as the CPU estimate counts them) stays under its budget. The stored spec holds the chosen
levers, so a resumed or recovered run trains with the same ones."""

import pytest

from jobs.data.formats import ParsedDataset
from jobs.data.store import register_parsed
from jobs.sweeps import submit_sweep
from storage import jobs_repo
from tests.jobs.models.test_budget import long_rows

pytestmark = pytest.mark.slow

BUDGETS_GIB = [1.2, 0.85, 0.75]


def test_three_budgets_are_each_honoured_by_the_measured_peak(live):
    register_parsed(live.studio, "long-rows", ParsedDataset("messages", long_rows(270)))
    base = {"dataset": "long-rows", "max_length": 256, "max_steps": 1, "eval_fraction": 0.0, "logging_steps": 1,
            "sample_prompts": 0, "name": "budget"}
    _, job_ids = submit_sweep(live.studio, base, {"memory_budget_gib": BUDGETS_GIB})
    levers, peaks = [], []
    for job_id, budget in zip(job_ids, BUDGETS_GIB, strict=True):
        job = live.wait_for(job_id)
        assert job.status == "succeeded", job.error
        with live.studio.db.read() as session:
            measured = [m.value for m in jobs_repo.metrics_for(session, job_id) if m.name == "peak_memory_bytes"]
        peaks.append(max(measured))
        assert peaks[-1] <= budget * 2**30, f"budget {budget} GiB, measured {peaks[-1] / 2**20:.0f} MiB"
        spec = job.spec  # what a resume or a recovery trains with: the levers chosen at submit
        assert spec["memory_budget_gib"] == budget and spec["batch_size"] * spec["grad_accum"] == 8
        levers.append((spec["batch_size"], spec["grad_accum"], spec["gradient_checkpointing"]))
    assert len(set(levers)) >= 2, levers
    print("memory target (budget GiB, levers, measured peak MiB):",
          [(b, lv, round(p / 2**20)) for b, lv, p in zip(BUDGETS_GIB, levers, peaks, strict=True)])
