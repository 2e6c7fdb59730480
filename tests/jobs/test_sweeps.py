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
    ({"spec_version": [1, 2]}, "grid", "'spec_version' is not a spec field a sweep can vary"),
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


def test_a_huge_grid_is_refused_before_any_point_is_built():
    """Security: 10^7 grid points once took 17 s and 2.4 GB before the cap refused them."""
    import time
    import tracemalloc

    axes = {name: list(range(1, 11)) for name in ("lora_r", "lora_alpha", "seed", "max_steps", "batch_size",
                                                  "grad_accum", "logging_steps")}
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        sweep_points({}, axes, "grid")
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert any("10000000 points" in p.message and "at most 64" in p.message for p in caught.value.problems)
    assert elapsed < 0.5 and peak < 1_000_000


def test_a_long_axis_and_long_axes_text_are_refused():
    from jobs.sweeps import MAX_AXES_TEXT_BYTES, MAX_AXIS_VALUES, axes_from_text

    with pytest.raises(SpecError) as caught:
        sweep_points({}, {"seed": list(range(MAX_AXIS_VALUES + 1))}, "list")
    assert any(f"at most {MAX_AXIS_VALUES} values" in p.message for p in caught.value.problems)
    with pytest.raises(SpecError) as caught:
        axes_from_text("seed: [" + "1, " * MAX_AXES_TEXT_BYTES + "1]")
    assert any(f"at most {MAX_AXES_TEXT_BYTES} bytes" in p.message for p in caught.value.problems)
    assert axes_from_text("lora_r: [8, 16]") == {"lora_r": [8, 16]}
    with pytest.raises(SpecError, match="not valid YAML"):
        axes_from_text("lora_r: [8")


def test_a_sweep_over_the_preference_methods_of_one_pairs_dataset(studio):
    from jobs.data.formats import PREFERENCE, ParsedDataset
    from jobs.data.store import register_parsed

    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": f"b{i}"}]} for i in range(4)]
    register_parsed(studio, "pairs", ParsedDataset(PREFERENCE, rows))
    with pytest.raises(SpecError) as caught:  # KTO reads labelled answers, not pairs: the whole sweep is refused
        submit_sweep(studio, {"dataset": "pairs", "max_steps": 2}, {"method": ["orpo", "kto"]}, name="bad")
    assert any(p.message.startswith("point 2: method kto trains on an unpaired dataset") for p in caught.value.problems)
    _, ids = submit_sweep(studio, {"dataset": "pairs", "max_steps": 2},
                          {"method": ["dpo", "orpo", "simpo", "reward"]}, name="methods")
    with studio.db.read() as s:
        assert [jobs_repo.get_job(s, job_id).spec["method"] for job_id in ids] == ["dpo", "orpo", "simpo", "reward"]


def test_a_sweep_over_grpo_rewards_and_answers_per_prompt(studio):
    from storage import jobs_repo
    from tests.jobs.test_submit import GRPO_JOB, _reference_rows

    _reference_rows(studio)
    _, job_ids = submit_sweep(studio, GRPO_JOB, {"num_generations": [2, 4], "grpo_rewards": ["json", "json, length"]})
    with studio.db.read() as session:
        specs = [jobs_repo.get_job(session, job_id).spec for job_id in job_ids]
    assert sorted((s["num_generations"], s["grpo_rewards"]) for s in specs) == [
        (2, "json"), (2, "json, length"), (4, "json"), (4, "json, length")]
