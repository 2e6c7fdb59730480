"""Tokens per forward pass (pack_length): a packed sequence of max_length tokens trains in shorter forward passes,
gradients accumulated, so a step trains the same tokens; no row is cut shorter than max_length; the plan, the
estimate, the memory fit and the script read the one resolution (TrainSpec.forward_passes)."""

import pytest

from jobs.models.budget import CHECKPOINTING_SPEED, PACK_SPLIT_SPEED, GiB, fit
from jobs.models.fits import KNOWN_SHAPES, Device, job_estimate
from jobs.run_settings.settings import Base, Machine, pack_lengths, resolve
from jobs.spec import SMOLLM2_BASE_MODEL, SpecError, parse_spec
from jobs.step_plan import DataSize, pack_length_problem, plan
from jobs.training.script import plain_trl_script

PLANNED = {"packing": True, "batch_size": 1, "grad_accum": 3, "learning_rate": 3e-3, "num_epochs": 1,
           "eval_fraction": 0, "base_model": SMOLLM2_BASE_MODEL}
CPU = Machine("cpu", bf16=True, jemalloc=True)
SMOLLM2 = KNOWN_SHAPES[SMOLLM2_BASE_MODEL]


def settings(**fields):
    return resolve(parse_spec({**PLANNED, **fields}), Base(hidden=576), CPU)


def test_a_step_trains_the_same_tokens_in_shorter_forward_passes():
    one, two = settings(), settings(pack_length=256)
    assert (one.max_length, one.grad_accum, one.forward_passes) == (512, 3, 1)
    assert (two.max_length, two.grad_accum, two.forward_passes, two.row_length) == (256, 6, 2, 512)
    tokens = [s.batch_size * s.max_length * s.grad_accum for s in (one, two)]
    assert tokens[0] == tokens[1]  # the tokens an optimizer step
    kwargs = two.trainer_kwargs()
    assert kwargs["max_length"] == 256 and kwargs["gradient_accumulation_steps"] == 6
    # Only packed SFT splits: unpacked rows and the preference methods keep their length.
    assert settings(pack_length=256, packing=False).max_length == 512
    assert settings(pack_length=256, method="dpo").forward_passes == 1


def test_the_spec_takes_only_a_divisor_of_max_length():
    for bad in (200, 1024):
        with pytest.raises(SpecError, match="must divide max_length"):
            parse_spec({"max_length": 512, "pack_length": bad})
    assert parse_spec({"max_length": 512, "pack_length": 128}).pack_length == 128


def test_no_row_is_cut_shorter_than_max_length():
    # Half of 512 holds a longest row of 200 tokens, not one of 300; a row past max_length is cut there first.
    assert pack_lengths(512, 200, (2, 4)) == [256]
    assert pack_lengths(512, 300, (2,)) == [] and pack_lengths(512, 900, (2,)) == []
    assert pack_lengths(512, 0, (2,)) == []  # rows unknown: one pass only
    spec = parse_spec({**PLANNED, "pack_length": 256})
    assert pack_length_problem(spec, 200) is None
    assert "shorter than the longest row (300 tokens" in pack_length_problem(spec, 300)


def test_the_plan_counts_the_steps_of_the_shorter_passes():
    lengths = [100] * 64  # five rows a 512-token sequence, two a 256-token one
    one = plan(parse_spec({**PLANNED, "grad_accum": 1}), DataSize(lengths, counted=True), 135_000_000)
    two = plan(parse_spec({**PLANNED, "grad_accum": 1, "pack_length": 256}), DataSize(lengths, counted=True),
               135_000_000)
    assert one.steps == 13 and two.steps == 16 and two.longest_row == 100  # 13 sequences of 512; 32 of 256, 2 a step
    assert "in 2 forward passes of 256 tokens" in two.sentence() and "forward passes" not in one.sentence()


def test_the_estimate_follows_the_resolution():
    one, two = (job_estimate(parse_spec({**PLANNED, **fields}), SMOLLM2, CPU) for fields in ({}, {"pack_length": 256}))
    half = job_estimate(parse_spec({**PLANNED, "max_length": 256, "grad_accum": 6}), SMOLLM2, CPU)
    assert two.peak == half.peak < one.peak


def test_the_memory_fit_splits_the_pass_before_checkpointing_where_no_row_is_cut():
    spec = parse_spec({**PLANNED, "batch_size": None, "grad_accum": 1})
    planned = spec.model_copy(update={"batch_size": 1})
    device = [Device("this machine", "CPU (2 cores, native bf16, jemalloc)", 64 * GiB)]
    one = job_estimate(planned, SMOLLM2, CPU).peak
    budget = (one - 1) / 0.9 / GiB  # one pass just does not fit
    chosen, memory, fields = fit(spec.model_copy(update={"memory_budget_gib": budget}), planned, SMOLLM2, device, 122)
    assert memory.fits and memory.levers.pack_length == 256 and not memory.levers.gradient_checkpointing
    assert chosen.pack_length == 256 and "pack_length" in fields and "forward passes of 256 tokens" in memory.sentence()
    assert memory.relative_speed == PACK_SPLIT_SPEED["cpu"] > CHECKPOINTING_SPEED["cpu"]
    # A row longer than half of max_length: no split, checkpointing instead.
    chosen, memory, _ = fit(spec.model_copy(update={"memory_budget_gib": budget}), planned, SMOLLM2, device, 300)
    assert memory.levers.pack_length is None and memory.levers.gradient_checkpointing


def test_the_script_states_the_pack_length():
    script = plain_trl_script(parse_spec({**PLANNED, "pack_length": 256}), "base", "data.jsonl")
    assert "'trainer.max_length': 256," in script and "'trainer.gradient_accumulation_steps': 6," in script
    assert "# pack_length 256: TRL packs to and cuts at trainer max_length" in script
    assert "pack_length" not in plain_trl_script(parse_spec(PLANNED), "base", "data.jsonl")


def test_submit_refuses_a_pack_length_that_would_cut_a_row_and_plans_one_that_cuts_none(studio):
    from jobs.data.formats import ParsedDataset
    from jobs.data.store import register_parsed
    from jobs.submit import planned_job, validate_submission
    from tests.jobs.models.test_budget import long_rows

    register_parsed(studio, "long", ParsedDataset("messages", long_rows(40)))  # up to 281 tokens of the demo base
    with pytest.raises(SpecError) as refused:
        validate_submission(studio, {"dataset": "long", "max_length": 256, "pack_length": 128})
    assert [(p.field, "shorter than the longest row" in p.message) for p in refused.value.problems] == [
        ("pack_length", True)]
    raw = {"dataset": "long", "max_length": 1024, "pack_length": 512}
    validate_submission(studio, raw)
    assert "in 2 forward passes of 512 tokens" in planned_job(studio, parse_spec(raw)).sentence()
