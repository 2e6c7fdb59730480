"""A budgeted search through the real queue and worker on the demo model: Optuna picks the trials, the driver reports
held-out loss at each evaluation, and a trial behind the others is pruned through the cancel path."""

import subprocess
import sys
import time

import optuna
import pytest

from jobs.search.driver import DONE, drive_search, open_storage, search_result, start_search
from storage import jobs_repo
from tests.conftest import FAST_JOB, REPO_ROOT

pytestmark = pytest.mark.slow

BASE = {**FAST_JOB, "max_steps": 10, "eval_steps": 2, "save_steps": 100, "warmup_ratio": 0, "sample_prompts": 0}


def test_a_search_prunes_a_bad_trial_and_survives_a_restart(live):
    started = time.monotonic()
    name = start_search(live.studio, {
        "name": "which-lr", "base": BASE, "pruner": "successive_halving", "budget_trials": 3,
        "space": {"learning_rate": {"low": 1e-7, "high": 1e-2, "log": True}, "lora_r": {"low": 4, "high": 8}},
        # A good baseline first, then a learning rate too small to move the loss: the halving rung prunes it.
        "first": [{"learning_rate": 5e-3, "lora_r": 8}, {"learning_rate": 1e-7, "lora_r": 4}]})
    restarted = False
    deadline = time.monotonic() + 600
    while (state := drive_search(live.studio, name)) != DONE and time.monotonic() < deadline:
        result = search_result(live.studio, name)
        # Restarted once the bad trial is settled: a pass in a process still starting could see its first evaluation
        # late, after the run had finished (then it is a complete trial, not a pruned one).
        if not restarted and len(result["trials"]) > 1 and result["trials"][1]["state"] in ("pruned", "complete"):
            # The app restarts: a fresh process reopens the search's storage and carries on from it.
            passed = subprocess.run([sys.executable, "-c", "from jobs.studio import open_studio; "
                                     "from jobs.search.driver import drive_searches; drive_searches(open_studio())"],
                                    env=live.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
            assert passed.returncode == 0, passed.stderr
            restarted = True
        time.sleep(0.5)
    result = search_result(live.studio, name)
    print(f"search took {time.monotonic() - started:.1f} s", result["trials"])
    assert state == DONE and restarted, live.worker_log()
    first, second, third = result["trials"]
    for trial in result["trials"]:  # what Optuna was told agrees with how the trial's job ended
        assert (trial["state"], trial["job_status"]) in (("complete", "succeeded"), ("pruned", "pruned")), trial
    assert (first["state"], first["job_status"]) == ("complete", "succeeded")
    assert (second["state"], second["job_status"]) == ("pruned", "pruned"), result["trials"]
    assert second["steps"] < BASE["max_steps"]  # stopped early
    assert third["job_status"] in ("succeeded", "pruned") and third["params"]["learning_rate"] != 5e-3
    assert result["best"]["number"] in (1, 3) and result["best_spec"]["name"] == "which-lr-best"
    assert len(result["curves"][str(first["job_id"])]) >= BASE["max_steps"] // BASE["eval_steps"]
    with live.studio.db.read() as session:
        job = jobs_repo.get_job(session, second["job_id"])
        assert job.group_name == "which-lr" and job.error.startswith("Pruned by its search")
    # Optuna's own record, reopened from its file, agrees.
    study = optuna.load_study(study_name=name, storage=open_storage(live.studio))
    assert [t.state.name for t in study.trials][:2] == ["COMPLETE", "PRUNED"]
