"""Sweeps: a grid or list over spec fields, queued as one group (all or none), cancelled as one."""

import pytest

from jobs.spec import SpecError
from jobs.sweeps import cancel_sweep, submit_sweep, sweep_points
from storage import jobs_repo


def test_grid_and_list_points():
    axes = {"lora_r": [8, 16], "learning_rate": [1e-3, 5e-4]}
    assert len(sweep_points({"max_steps": 3}, axes, "grid")) == 4
    assert sweep_points({}, axes, "list") == [{"lora_r": 8, "learning_rate": 1e-3}, {"lora_r": 16,
                                                                                    "learning_rate": 5e-4}]


@pytest.mark.parametrize(("axes", "mode", "words"), [
    ({"lora_rank": [8]}, "grid", "'lora_rank' is not a spec field"),
    ({"lora_r": []}, "grid", "non-empty list"),
    ({"lora_r": [8, 16], "seed": [1]}, "list", "same length"),
    ([1, 2], "grid", "a mapping of spec fields"),
    ({"lora_r": [8]}, "spiral", "'grid' or 'list'"),
    ({"lora_r": list(range(1, 66))}, "grid", "at most 64"),
])
def test_bad_sweeps_are_refused(axes, mode, words):
    with pytest.raises(SpecError) as caught:
        sweep_points({}, axes, mode)
    assert any(words in p.message for p in caught.value.problems)


def test_a_sweep_is_queued_whole_or_not_at_all(studio):
    with pytest.raises(SpecError) as caught:
        submit_sweep(studio, {"max_steps": 3}, {"lora_r": [8, 0]}, name="bad")
    assert [p.message for p in caught.value.problems] == ["point 2: must be a whole number from 1 to 1024 (got 0)"]
    with studio.db.read() as s:
        assert jobs_repo.list_jobs(s) == []
    group, ids = submit_sweep(studio, {"max_steps": 3, "name": "rank"}, {"lora_r": [4, 8], "seed": [1, 2]},
                              name="ranks")
    with studio.db.read() as s:
        jobs = [jobs_repo.get_job(s, job_id) for job_id in ids]
    assert group == "ranks" and len(ids) == 4 and {j.group_name for j in jobs} == {"ranks"}
    assert [j.name for j in jobs] == ["rank-1", "rank-2", "rank-3", "rank-4"]
    assert [(j.spec["lora_r"], j.spec["seed"]) for j in jobs] == [(4, 1), (4, 2), (8, 1), (8, 2)]
    assert set(cancel_sweep(studio, "ranks").values()) == {"cancelled"}
