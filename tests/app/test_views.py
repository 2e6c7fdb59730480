"""The Runs tab's numbers, from ledger rows: the ETA of a running job, and the spec list of a finished one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app import views
from app.runs import run_view
from jobs.spec import TrainSpec
from storage import jobs_repo
from storage.db import Database
from storage.models import JobStatus, Metric, utcnow
from storage.schema import upgrade_database

STARTUP_S = 40.0  # loading the base and the data, before the first step
STEP_S = 1.0
EVAL_S = 12.0  # an eval with its sample answers, every EVAL_EVERY steps
EVAL_EVERY = 10
TOTAL_STEPS = 60
FINISHING_S = 25.0  # after the last step: final eval, save, registration


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    upgrade_database(database)
    yield database
    database.dispose()


def _run(session, name: str, steps: int, started, status: str = JobStatus.RUNNING):
    """A job whose 'loss' rows carry the times a real run logs them: startup, a second a step, an eval every ten."""
    job = jobs_repo.create_job(session, name, {})
    job.status, job.started_at, job.step, job.total_steps = status, started, steps, TOTAL_STEPS
    at = started + timedelta(seconds=STARTUP_S)
    for step in range(1, steps + 1):
        at += timedelta(seconds=STEP_S + (EVAL_S if step % EVAL_EVERY == 0 else 0.0))
        session.add(Metric(job_id=job.id, step=step, name="loss", value=1.0, created_at=at))
    return job, at


def test_the_eta_counts_evals_and_the_finish_but_not_the_startup(db):
    now = utcnow()
    with db.write() as session:
        done, last_step_at = _run(session, "earlier", TOTAL_STEPS, now - timedelta(hours=1), JobStatus.SUCCEEDED)
        done.finished_at = last_step_at + timedelta(seconds=FINISHING_S)
        running, at = _run(session, "now", 55, now - timedelta(minutes=10))
    with db.read() as session:
        running = jobs_repo.get_job(session, running.id)
        pace = run_view.job_pace(session, running)
    eta = views.eta_seconds(running, pace, now=at)
    truth = 5 * STEP_S + EVAL_S + FINISHING_S  # steps 56-60, the eval at 60, the finish: 42 s
    # Near the end the finish is most of what is left: the old formula (the attempt's start to now, nothing for
    # the finish) said 14 s for these 42.
    assert truth * 0.8 <= eta <= truth * 1.2, (eta, truth)


def test_no_eta_without_a_pace_or_for_a_finished_job(db):
    with db.write() as session:
        queued = jobs_repo.create_job(session, "waits", {})
        done, _ = _run(session, "done", TOTAL_STEPS, utcnow(), JobStatus.SUCCEEDED)
    with db.read() as session:
        for job in (jobs_repo.get_job(session, queued.id), jobs_repo.get_job(session, done.id)):
            assert views.eta_seconds(job, run_view.job_pace(session, job)) is None


def test_the_spec_list_shows_every_default_as_a_value():
    """A default made per spec (a list) has no `field.default`: it showed as "PydanticUndefined"."""
    changed, same = views.spec_changes(TrainSpec(name="mine").model_dump(mode="json"))
    assert not any("PydanticUndefined" in line for line in changed + same), changed + same
    assert "Modules to train fully (`modules_to_save`): (empty)" in same
    changed, _ = views.spec_changes(TrainSpec(name="x", modules_to_save=["lm_head"]).model_dump(mode="json"))
    assert "Modules to train fully (`modules_to_save`): lm_head (default (empty))" in changed


def test_a_combined_adapter_says_what_it_was_made_of():
    spec = {"combination_type": "ties", "density": 0.5, "majority_sign_method": "total", "svd_rank": None,
            "parents": [{"adapter": "a", "adapter_id": 1, "weight": 0.7}, {"adapter": "b", "adapter_id": 2,
                                                                          "weight": -0.3}]}
    assert views.combination_text(spec) == "combined (ties, density 0.5, majority sign method total): a ×0.7 + b ×-0.3"


def test_the_runs_table_marks_each_groups_best_finished_run():
    from storage.models import Job

    def job(job_id, status, group):
        return Job(id=job_id, name=f"t-{job_id}", status=status, group_name=group, attempt=1, step=4, total_steps=4,
                   spec={}, created_at=utcnow())

    jobs = [job(1, "succeeded", "s"), job(2, "pruned", "s"), job(3, "succeeded", "s"), job(4, "succeeded", None)]
    latest = {1: {"eval_loss": 2.0}, 2: {"eval_loss": 1.0}, 3: {"eval_loss": 1.5}, 4: {"eval_loss": 0.1}}
    table = views.jobs_table(jobs, latest)
    assert list(table["sweep"]) == ["s", "s", "s ★ best", ""]  # pruned trial 2 stopped early: never the best


def test_a_search_result_as_tables_and_charts():
    from app.runs import search_panel
    from app.runs.charts import overlay

    found = {"name": "s", "state": "done", "request": {"budget_trials": 2, "budget_minutes": None},
             "compute": {"trials": 2, "steps": 6, "seconds": 30.0}, "importance": {"lora_r": 0.2, "learning_rate": 0.8},
             "importance_note": "", "best": {"number": 1, "job_id": 7, "value": 1.25},
             "trials": [{"number": 1, "job_id": 7, "job_status": "succeeded", "state": "complete", "value": 1.25,
                         "steps": 4, "seconds": 20.0, "params": {"lora_r": 8}, "origin": "plan"},
                        {"number": 2, "job_id": 8, "job_status": "pruned", "state": "pruned", "value": 3.0,
                         "steps": 2, "seconds": 10.0, "params": {"lora_r": 4}}],
             "curves": {"7": [(2, 2.0), (4, 1.25)], "8": [(2, 3.0)]}}
    assert list(search_panel.trials_table(found)["best"]) == ["★ best", ""]
    assert list(search_panel.trials_table(found)["status"]) == ["succeeded", "pruned"]
    assert list(search_panel.trials_table(found)["values from"]) == ["the studio's plan", "the sampler"]
    curves = search_panel.trial_curves(found)
    assert curves == {"trial 1": {"held-out loss": [(2.0, 2.0), (4.0, 1.25)]},
                      "trial 2": {"held-out loss": [(2.0, 3.0)]}}
    drawn = overlay(curves, "step", "Held-out loss by trial").axes[0].lines
    assert [line.get_marker() for line in drawn][1] == "o"  # the trial pruned at its first evaluation is seen
    assert list(search_panel.importance_frame(found)["parameter"]) == ["learning_rate", "lora_r"]
    assert "held-out loss 1.2500" in search_panel.summary_text(found)


def test_the_adapters_table_says_what_kind_each_entry_is():
    """Full and freeze fine-tuning make whole models, listed with the adapters: the kind column says which."""
    assert views.kind_text({}) == "adapter"
    assert views.kind_text({"finetuning": "full"}) == "model (full)"
    assert views.kind_text({"finetuning": "freeze", "freeze_trainable_layers": 1}) == "model (freeze, last 1 blocks)"
    assert views.ADAPTER_COLUMNS.index("kind") == views.ADAPTER_COLUMNS.index("base model") + 1


def test_a_reward_adapter_says_it_is_a_reward_model_in_the_adapters_table():
    from storage.models import Adapter, Job, JobKind

    job = Job(id=7, kind=JobKind.TRAIN, spec={"method": "reward", "dataset": "pairs", "lora_r": 4}, step=6)
    adapter = Adapter(id=1, name="rm", base_model="demo", size_bytes=1, job_id=7, created_at=utcnow())
    table = views.adapters_table([(adapter, job)], {}, {})
    assert "reward model on pairs" in table.iloc[0].tolist()
