"""The defaults chosen per job: enough optimizer steps for a small dataset and a large one, counted with the base's
real tokenizer; the person's values always win; the plan's step count is the one the trainer makes."""

import pytest

from jobs.data.example_data import generate_examples, to_jsonl
from jobs.data.store import find_dataset, import_dataset
from jobs.models.memory_inputs import ModelShape
from jobs.models.resolve import prepared_path
from jobs.planning import job_plan
from jobs.spec import DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL, TrainSpec, parse_spec
from jobs.step_plan import (
    AUTO_FIELDS,
    MAX_AUTO_BATCH,
    MAX_AUTO_EVAL_ROWS,
    MEMORISING_EPOCHS,
    MIN_ROWS_FOR_EVAL_SPLIT,
    MIN_STEPS_PER_EPOCH,
    MIN_TOTAL_STEPS,
    DataSize,
    estimated_lengths,
    eval_fraction_for,
    learning_rate_for,
    plan,
)
from jobs.studio import open_studio
from jobs.submit import submit_job
from storage import jobs_repo
from storage.settings import load_settings


def _stored(studio, name: str, rows: int) -> str:
    source = studio.settings.data_dir / f"{name}.jsonl"
    source.write_text(to_jsonl(generate_examples(rows, seed=7)))
    import_dataset(studio, source, name)
    return name


@pytest.mark.parametrize("rows", [50, 5000])
def test_the_rule_gives_at_least_the_minimum_of_steps(studio, rows):
    step_plan = job_plan(studio, parse_spec({"dataset": _stored(studio, f"rows{rows}", rows)}))
    spec = step_plan.spec
    assert step_plan.counted  # the demo tokenizer counted the rows, no estimate
    assert step_plan.steps >= MIN_TOTAL_STEPS, step_plan.sentence()
    steps_per_epoch = step_plan.steps / spec.num_epochs
    assert steps_per_epoch >= min(MIN_STEPS_PER_EPOCH, step_plan.sequences_per_epoch)
    assert set(step_plan.chosen) == {"eval_fraction", "packing", "batch_size", "num_epochs", "learning_rate"}
    assert spec.learning_rate == 5e-3  # the 4M-parameter demo gets the top of the range
    if rows == 50:  # no eval split; 50 short rows pack into a handful of sequences: each row is a step instead
        assert spec.eval_fraction == 0 and (step_plan.train_rows, step_plan.eval_rows) == (50, 0)
        assert not spec.packing and spec.batch_size == 1 and step_plan.sequences_per_epoch == 50
        assert spec.num_epochs == 2 and step_plan.steps == 100
        assert "No eval split (fewer than 500 rows" in step_plan.sentence()
    else:  # plenty of data: 200 rows held out; packed, several sequences a step (4,800 short rows pack into ~250)
        assert spec.eval_fraction == 0.04 and (step_plan.train_rows, step_plan.eval_rows) == (4800, 200)
        assert "200 rows held out for eval every 25 steps, 4,800 train." in step_plan.sentence()
        assert spec.packing and 1 < spec.batch_size <= MAX_AUTO_BATCH, step_plan.sentence()


@pytest.mark.parametrize(("rows", "fraction", "eval_rows"), [
    (1, 0, 0), (320, 0, 0), (MIN_ROWS_FOR_EVAL_SPLIT - 1, 0, 0), (MIN_ROWS_FOR_EVAL_SPLIT, 0.1, 50), (900, 0.1, 90),
    (2000, 0.1, 200), (2001, 0.09995, 200), (3000, 0.06667, 200), (40_000, 0.005, 200)])
def test_the_eval_split_is_none_for_a_small_dataset_and_at_most_200_rows(rows, fraction, eval_rows):
    assert eval_fraction_for(rows) == fraction
    step_plan = plan(parse_spec({}), DataSize(lengths=[100] * rows, counted=True), None)
    assert step_plan.spec.eval_fraction == fraction and "eval_fraction" in step_plan.chosen
    assert step_plan.eval_rows == eval_rows <= MAX_AUTO_EVAL_ROWS and step_plan.train_rows == rows - eval_rows


def test_a_validation_dataset_or_a_given_fraction_decides_the_eval_split():
    data = DataSize(lengths=[100] * 5000, counted=True)
    with_dataset = plan(parse_spec({"eval_dataset": "held-out"}), data, None)
    assert with_dataset.spec.eval_fraction == 0 and with_dataset.train_rows == 5000
    assert "Eval on the validation dataset 'held-out' every 25 steps." in with_dataset.sentence()
    for given in (0, 0.2):
        mine = plan(parse_spec({"eval_fraction": given}), DataSize(lengths=[100] * 320, counted=True), None)
        assert mine.spec.eval_fraction == given and "eval_fraction" not in mine.chosen
        assert mine.eval_rows == round(320 * given)
    assert "No eval split: all 320 rows train" in plan(parse_spec({"eval_fraction": 0}),
                                                        DataSize(lengths=[100] * 320, counted=True), None).sentence()


def test_small_data_seen_several_times_with_nothing_held_out_warns_with_the_safer_choice():
    """Issue 33: the defaults trained 320 rows for several epochs with no eval split and said nothing of memorising.
    The plan says so, with the one-click choice (a held-out tenth); a split, a validation set, big data, or a single
    pass over the rows does not warn."""
    small = DataSize(lengths=[100] * 320, counted=True)
    default = plan(parse_spec({}), small, 4_000_000)
    assert default.may_memorise and default.epochs >= MEMORISING_EPOCHS
    assert default.eval_rows == 0 and default.train_rows == 320
    warning = default.memorising_warning()
    assert f"each of the 320 rows is trained on {default.epochs:.3g} times at learning rate 0.005" in warning
    assert "hold out a tenth (eval fraction 0.1)" in warning and warning in default.sentence()
    assert warning not in default.sentence(warn=False)
    for quiet in (plan(parse_spec({"eval_fraction": 0.1}), small, None),  # the safer choice taken
                  plan(parse_spec({"eval_dataset": "held-out"}), small, None),
                  plan(parse_spec({"num_epochs": 1}), small, None),
                  plan(parse_spec({}), DataSize(lengths=[100] * 5000, counted=True), None)):
        assert not quiet.may_memorise and quiet.memorising_warning() == ""
        assert "memorise" not in quiet.sentence()


def test_explicit_values_override_the_rule(studio):
    dataset = _stored(studio, "rows50", 50)
    mine = {"dataset": dataset, "batch_size": 4, "num_epochs": 2, "learning_rate": 2e-3, "packing": True,
            "eval_fraction": 0.1}
    step_plan = job_plan(studio, parse_spec(mine))
    assert step_plan.chosen == ()
    assert {name: getattr(step_plan.spec, name) for name in mine} == mine
    assert "Chosen for this job" not in step_plan.sentence()
    fixed = job_plan(studio, parse_spec({"dataset": dataset, "max_steps": 7}))
    assert fixed.steps == 7 and "num_epochs" not in fixed.chosen and "(max_steps 7) of" in fixed.sentence()


def test_a_job_of_max_steps_says_how_many_epochs_they_make(studio):
    """The plan once said "1 epoch" for any max_steps, here 2.5 epochs' worth."""
    fields = {"dataset": _stored(studio, "rows50", 50), "batch_size": 4, "packing": False, "eval_fraction": 0}
    steps_per_epoch = -(-job_plan(studio, parse_spec(fields)).sequences_per_epoch // 4)
    steps = steps_per_epoch * 5 // 2
    step_plan = job_plan(studio, parse_spec({**fields, "max_steps": steps}))
    expected = round(steps / steps_per_epoch, 2)
    assert step_plan.spec.num_epochs == expected and 2 <= expected <= 3
    assert f"{expected:g} epochs (max_steps {steps}) of" in step_plan.sentence()


def test_submit_stores_the_chosen_values_and_says_which(studio):
    job_id = submit_job(studio, {"dataset": _stored(studio, "rows50", 50), "batch_size": 2})
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)
    assert job.spec["batch_size"] == 2 and job.spec["packing"] is False and job.spec["num_epochs"] == 4
    assert job.spec["eval_fraction"] == 0
    assert job.provenance["plan"] == {"chosen": {"eval_fraction": 0.0, "packing": False, "num_epochs": 4.0,
                                                 "learning_rate": 5e-3},
                                      "steps": 100, "tokens": job.provenance["plan"]["tokens"],
                                      "tokens_counted": True, "longest_row": job.provenance["plan"]["longest_row"]}
    assert 0 < job.provenance["plan"]["longest_row"] <= job.spec["max_length"]  # what an out-of-memory retry reads


def test_the_learning_rate_follows_the_base_size():
    assert learning_rate_for(134_515_008) == 3.2e-3  # SmolLM2-135M
    assert learning_rate_for(7_000_000_000) == 2e-4
    assert learning_rate_for(13_000_000_000) == 1.3e-4
    assert learning_rate_for(70_000_000_000) == 1e-4  # the floor (QLoRA's rate for 33B and 65B)
    assert learning_rate_for(3_900_000) == 5e-3  # the ceiling
    assert learning_rate_for(None) == 2e-4  # a hub model not downloaded yet: the usual 7B rate


def test_without_a_tokenizer_tokens_are_estimated_from_characters():
    rows = [{"messages": [{"role": "user", "content": "x" * 396}]}]
    assert estimated_lengths(rows) == [101]  # "user: " + 396 + newline: 403 characters / 4, rounded up
    step_plan = plan(parse_spec({"eval_fraction": 0}), DataSize(lengths=[100] * 20, counted=False), None)
    assert "estimated from characters" in step_plan.sentence() and step_plan.spec.learning_rate == 2e-4


@pytest.mark.slow
def test_the_trainer_makes_the_planned_steps(studio, demo_model_dir, tmp_path):
    from jobs.training.train import train

    spec = parse_spec({"dataset": _stored(studio, "rows50", 50), "early_stopping_patience": 0, "sample_prompts": 0,
                       "save_steps": 1000, "eval_steps": 1000})
    step_plan = job_plan(studio, spec)
    path = studio.absolute(find_dataset(studio, spec.dataset).path)
    result = train(step_plan.spec, tmp_path / "run", str(demo_model_dir), path, lambda *a: None, lambda: False)
    assert result.final_metrics["steps"] == step_plan.steps == 100


@pytest.mark.parametrize("base", [DEMO_BASE_MODEL, SMOLLM2_BASE_MODEL])
def test_one_spec_gets_one_plan_before_and_after_its_base_is_prepared(tmp_path, demo_model_dir, request, base):
    fresh = open_studio(load_settings({"STUDIO_DATA_DIR": str(tmp_path / "data")}))  # no base built or prepared
    try:
        raw = {"base_model": base, "dataset": "example" if base == DEMO_BASE_MODEL else "pirate"}
        assert prepared_path(base, fresh.settings.models_dir) is None
        before = submit_job(fresh, raw)
        prepared = demo_model_dir if base == DEMO_BASE_MODEL else request.getfixturevalue("smollm2_dir")
        (fresh.settings.models_dir / base).symlink_to(prepared, target_is_directory=True)
        assert prepared_path(base, fresh.settings.models_dir) is not None
        after = submit_job(fresh, raw)
        with fresh.db.read() as session:
            jobs = [jobs_repo.get_job(session, job_id) for job_id in (before, after)]
    finally:
        fresh.db.dispose()
    plans = [job.provenance["plan"] for job in jobs]
    assert plans[0] == plans[1] and plans[0]["tokens_counted"]  # counted with the base's tokenizer both times
    assert [{name: job.spec[name] for name in AUTO_FIELDS} for job in jobs] == [
        {name: jobs[0].spec[name] for name in AUTO_FIELDS}] * 2
    params = ModelShape.from_dir(prepared).total_params  # the size the prepared weights have
    assert plans[0]["chosen"]["learning_rate"] == learning_rate_for(params) != learning_rate_for(None)


def test_the_plan_counts_the_rows_as_the_run_trains_them_with_its_system_prompt_and_template(studio):
    """Submit's plan (steps, tokens, the memory estimate's longest row) counts each row with the spec's system prompt
    and chosen template, as the worker's run counts the rows it trains on (jobs.training.prepare.rows_plan)."""
    from jobs.data.stats import tokenize_row
    from jobs.models.loading import load_tokenizer
    from jobs.models.templates import template_text
    from jobs.planning import longest_sequence
    from jobs.training.prepare import rows_plan, run_rows

    name = _stored(studio, "rows80", 80)
    base = str(prepared_path(DEMO_BASE_MODEL, studio.settings.models_dir))
    plain = parse_spec({"dataset": name, "packing": True})
    spec = plain.model_copy(update={"system_prompt": "Answer as a ship's cook would, at length. " * 12,
                                    "chat_template": "chatml"})
    submitted = job_plan(studio, spec)
    tokenizer = load_tokenizer(base, chat_template=template_text(spec.chat_template))
    rows = run_rows(spec, studio.absolute(find_dataset(studio, name).path))
    run = rows_plan(spec, base, rows, tokenizer)
    assert (submitted.tokens, submitted.steps, submitted.spec.batch_size) == (
        run.tokens, run.steps, run.spec.batch_size)
    assert submitted.tokens > job_plan(studio, plain).tokens  # so the prompt was counted at all
    longest = max(len(tokenize_row(tokenizer, row, False).ids) for row in rows)  # as the run checks pack_length
    assert longest_sequence(studio, spec) == longest > longest_sequence(studio, plain)


def test_a_preference_plan_counts_pairs_names_its_method_and_chooses_no_packing_aloud():
    sentence = plan(TrainSpec(method="dpo"), DataSize(lengths=[100] * 50, counted=True), None).sentence()
    assert "of 50 preference pairs" in sentence and "Method dpo: an adapter trains." in sentence
    assert "packing" not in sentence  # the spec stores a choice, but a preference method never packs
    sentence = plan(TrainSpec(method="grpo"), DataSize(lengths=[100] * 50, counted=True), None).sentence()
    assert "of 50 prompts" in sentence and "Method grpo" in sentence


def test_several_devices_share_each_epoch_so_the_plan_counts_their_steps_once():
    """Under DDP each rank trains its share of an epoch's sequences (the sampler splits them), so a step takes
    batch × accumulation × devices sequences: the plan's steps, epochs and chosen batch follow the devices."""
    data = DataSize(lengths=[60] * 400, counted=True)
    fixed = {"eval_fraction": 0, "packing": False, "batch_size": 2, "grad_accum": 1, "num_epochs": 1}
    one = plan(parse_spec({**fixed, "devices": 1}), data, None)
    four = plan(parse_spec({**fixed, "devices": 4}), data, None)
    assert (one.steps, four.steps) == (200, 50) and four.tokens == one.tokens
    assert four.epochs == 1 and "2 × 1 per step on each of 4 devices" in four.sentence()
    chosen = plan(parse_spec({"eval_fraction": 0, "packing": False, "devices": 4}), data, None)
    assert chosen.steps / chosen.spec.num_epochs >= MIN_STEPS_PER_EPOCH  # the rule's batch counts the devices too
