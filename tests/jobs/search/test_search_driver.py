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
