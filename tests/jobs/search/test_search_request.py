"""A search is refused whole before anything is queued: every problem at once, each naming its field, with the
numbers."""

import pytest

from jobs.search.driver import list_searches, start_search
from jobs.search.request import parse_request
from jobs.spec import SpecError
from jobs.sweeps import submit_sweep
from storage import jobs_repo
from tests.conftest import FAST_JOB

SPACE = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora_r": {"low": 4, "high": 16},
         "target_modules": {"choices": ["attention", ["q_proj", "v_proj"]]}}


def _problems(raw) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_request(raw)
    return {p.field: p.message for p in caught.value.problems}


def test_every_problem_of_a_request_at_once():
    found = _problems({"name": "s", "budget_trials": 65, "budget_minutes": -1, "parallel": 0, "pruner": "median",
                       "space": {"learning_rate": {"low": 1e-2, "high": 1e-3}, "lora_r": {"low": 8, "high": 8},
                                 "warmup_ratio": {"low": 0, "high": 0.1, "log": True},
                                 "lora_alpha": {"low": 0, "high": 32}, "target_modules": {"choices": []},
                                 "lora_rank": {"low": 1, "high": 2}, "seed": {"low": 1.5, "high": 3}}})
    assert found == {
        "space.learning_rate": "the range is inverted: low 0.01 must be below high 0.001",
        "space.lora_r": "the range is empty: low 8 must be below high 8",
        "space.warmup_ratio": "a log range needs low above 0 (got 0)",
        "space.lora_alpha": "0: must be greater than 0 and at most 1,000,000 (got 0)",
        "space.target_modules": "choices must be a non-empty list",
        "space.lora_rank": "'lora_rank' is not a spec field a search can vary",
        "space.seed": "'seed' takes whole numbers (got low=1.5, high=3)",
        "budget_trials": "65 trials; a search is a sweep and a sweep runs at most 64 jobs",
        "budget_minutes": "minutes above 0, or empty for none (got -1)",
        "parallel": "a whole number from 1 to 1 (got 0)",
        "pruner": "one of hyperband, successive_halving (got 'median')"}


def test_the_plans_point_counts_against_the_trials_and_is_a_yes_or_no():
    first = [{"lora_r": 4}, {"lora_r": 16}]
    assert _problems({"name": "s", "space": SPACE, "budget_trials": 2, "first": first}) == {
        "first": "2 points to try first and the plan's own (start_from_plan) but a budget of 2 trials"}
    assert parse_request({"name": "s", "space": SPACE, "budget_trials": 2, "first": first,
                          "start_from_plan": False}).first == first
    assert _problems({"name": "s", "space": SPACE, "budget_trials": 2, "start_from_plan": "yes"}) == {
        "start_from_plan": "true or false (got 'yes')"}


def test_a_good_request_parses():
    request = parse_request({"name": "ok", "space": SPACE, "budget_trials": 4, "parallel": 2})
    assert (request.budget_trials, request.parallel, request.pruner) == (4, 2, "hyperband")


def test_what_a_search_runs_is_checked_before_anything_is_queued(studio):
    submit_sweep(studio, {**FAST_JOB, "name": "taken"}, {"lora_r": [4]}, name="taken")
    with pytest.raises(SpecError) as caught:
        start_search(studio, {"name": "taken", "space": SPACE, "budget_trials": 3, "budget_minutes": 0.5,
                              "base": {**FAST_JOB, "max_steps": 4, "eval_steps": 3, "eval_fraction": 0,
                                       "dataset": "nope"}})
    assert sorted((p.field, p.message) for p in caught.value.problems) == [
        ("base.dataset", "no dataset named 'nope'; upload it first"),
        ("base.eval_fraction", "a search ranks trials by held-out loss: hold out rows (eval_fraction above 0) or "
                               "name an eval_dataset"),
        ("base.eval_steps", "trials train 4 steps and evaluate every 3: a trial is pruned between evaluations, so it "
                            "needs at least two (eval_steps at most 2)"),
        ("budget_minutes", "0.5 minutes is below one trial's minimum: a search's time budget is at least 1 minute "
                           "(1.0 minutes)"),
        ("name", "a sweep or search named 'taken' exists already"),
        ("name", "an adapter or active job is already named 'taken-1'")]  # its trials' names
    with studio.db.read() as s:
        assert [job.name for job in jobs_repo.list_jobs(s)] == ["taken-1"]  # the sweep's job only
    assert list_searches(studio) == []


def test_parameter_importance_from_three_finished_trials():
    """PED-ANOVA: no scikit-learn, any sampler; the learning rate that decides the loss comes out on top."""
    import optuna

    from jobs.search.driver import _importance

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("learning_rate", 1e-4, 1e-2, log=True) - 3e-3) ** 2 * 1e4
                   + t.suggest_int("lora_r", 4, 32) * 1e-4, n_trials=2)
    assert _importance(study) == ({}, "parameter importance needs 3 finished trials (2 so far)")
    study.optimize(lambda t: (t.suggest_float("learning_rate", 1e-4, 1e-2, log=True) - 3e-3) ** 2 * 1e4
                   + t.suggest_int("lora_r", 4, 32) * 1e-4, n_trials=6)
    importance, note = _importance(study)
    assert note == "" and max(importance, key=importance.get) == "learning_rate", importance
