"""The driver's passes without a worker: a start queues `parallel` trials as jobs of the search's group, a time
budget spent starts no more, and cancelling stops the search and its trials."""

import optuna

from jobs.search.driver import CANCELLED, RUNNING, cancel_search, drive_search, open_storage, start_search
from storage import jobs_repo
from tests.conftest import FAST_JOB


def _jobs(studio):
    with studio.db.read() as session:
        return [(job.name, job.status, job.group_name) for job in jobs_repo.list_jobs(session)][::-1]


def test_a_spent_time_budget_starts_no_more_trials(studio):
    start_search(studio, {"name": "timed", "base": FAST_JOB, "budget_trials": 5, "budget_minutes": 1, "parallel": 2,
                          "space": {"lora_r": {"low": 4, "high": 8}}})
    assert _jobs(studio) == [("timed-1", "queued", "timed"), ("timed-2", "queued", "timed")]
    assert drive_search(studio, "timed") == RUNNING and len(_jobs(studio)) == 2  # two at once, no more
    study = optuna.load_study(study_name="timed", storage=open_storage(studio))
    study.set_user_attr("started_at", study.user_attrs["started_at"] - 61)  # a minute later
    with studio.db.write() as session:
        jobs_repo.request_cancel(session, 1)  # trial 1 ends (cancelled by its person: a failed trial)
    assert drive_search(studio, "timed") == RUNNING and len(_jobs(studio)) == 2  # out of time: no third trial
    cancel_search(studio, "timed")
    assert [status for _, status, _ in _jobs(studio)] == ["cancelled", "cancelled"]
    assert drive_search(studio, "timed") == CANCELLED
    assert [t.state.name for t in optuna.load_study(study_name="timed", storage=open_storage(studio)).trials] == [
        "FAIL", "FAIL"]


def _first_trial(studio, name):
    from jobs.search.driver import search_result

    trial = search_result(studio, name)["trials"][0]
    return trial["params"], trial["origin"]


def test_the_first_trial_is_the_plans_own_choice_clamped_into_the_space(studio):
    space = {"learning_rate": {"low": 1e-6, "high": 2e-6, "log": True}, "lora_r": {"low": 16, "high": 32},
             "lora_dropout": {"low": 0.0, "high": 0.2},
             "target_modules": {"choices": ["attention", "all-linear"]}}
    start_search(studio, {"name": "planned", "base": {**FAST_JOB, "lora_dropout": 0.1}, "budget_trials": 3,
                          "space": space})
    # The plan's learning rate (the rule's, the base leaves it empty) is far above 2e-6, the default rank 8 below 16:
    # both are clamped to the span's edge; the base's own dropout lies inside and is kept; all-linear is a choice.
    assert _first_trial(studio, "planned") == ({"learning_rate": 2e-6, "lora_r": 16, "lora_dropout": 0.1,
                                                "target_modules": "all-linear"}, "plan")
    with studio.db.read() as session:
        assert jobs_repo.list_jobs(session)[0].spec["lora_r"] == 16


def test_a_choice_the_space_lacks_is_left_to_the_sampler_and_the_plan_can_be_declined(studio):
    space = {"lora_r": {"low": 4, "high": 8}, "target_modules": {"choices": ["attention", ["q_proj", "v_proj"]]}}
    start_search(studio, {"name": "partly", "base": FAST_JOB, "budget_trials": 2, "space": space})
    params, origin = _first_trial(studio, "partly")
    assert (params["lora_r"], origin) == (8, "plan") and params["target_modules"] in space["target_modules"]["choices"]
    start_search(studio, {"name": "sampled", "base": FAST_JOB, "budget_trials": 2, "start_from_plan": False,
                          "space": {"learning_rate": {"low": 1e-6, "high": 2e-6, "log": True}}})
    params, origin = _first_trial(studio, "sampled")
    assert origin is None and params["learning_rate"] != 2e-6
