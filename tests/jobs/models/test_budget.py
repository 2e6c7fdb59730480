"""A memory target the plan honours (jobs.models.budget): the levers left to the studio are chosen fastest first so
the estimated peak fits under the budget, the person's own fields are kept, and a budget nothing fits is refused at
submit with the smallest that works. The measured peaks of real jobs: tests/jobs/queue/test_memory_target.py."""

from dataclasses import replace

import pytest

from app.train.memory_panel import verdict_text
from app.train.plan_panel import plan_text
from app.train.presets_panel import as_code
from jobs.data.formats import ParsedDataset
from jobs.data.store import register_parsed
from jobs.models.budget import CHECKPOINTING_SPEED, HEADROOM, GiB, fit
from jobs.models.fits import KNOWN_SHAPES, Device
from jobs.spec import SMOLLM2_BASE_MODEL, SpecError, parse_spec
from jobs.submit import planned_job, validate_submission
from storage import workers_repo
from tests.word_rows import word_rows

CPU = Device("this machine", "CPU (2 cores)", 64 * GiB)


def long_rows(count: int) -> list[dict]:
    """Rows of about 150 demo tokens: each fills its own packed sequence of 256, so 270 of them plan a batch of 8."""
    return word_rows(count, 30, 60)


def smollm2_plan(**fields) -> tuple:
    """(the person's spec, as the rule plans it: a batch of 8 packed sequences of 1,024 tokens)."""
    original = parse_spec({"base_model": SMOLLM2_BASE_MODEL, "max_length": 1024, **fields})
    return original, original.model_copy(update={"batch_size": original.batch_size or 8, "packing": True,
                                                  "learning_rate": 3e-3, "num_epochs": 1.0})


def test_the_levers_are_chosen_fastest_first_and_the_effective_batch_is_kept():
    original, planned = smollm2_plan()
    seen = {}
    for budget in (64, 24, 12, 6, 4.5):
        spec, memory, chosen = fit(original.model_copy(update={"memory_budget_gib": budget}), planned,
                                   KNOWN_SHAPES[SMOLLM2_BASE_MODEL], [CPU])
        levers = memory.levers
        assert levers.batch_size * levers.grad_accum == 8  # the same effective batch: the same steps and tokens
        assert (spec.batch_size, spec.grad_accum) == (levers.batch_size, levers.grad_accum)
        if memory.fits:
            assert memory.peak_bytes <= budget * GiB * HEADROOM
        seen[budget] = (levers.gradient_checkpointing, levers.batch_size, memory.relative_speed)
    assert seen[64] == (False, 8, 1.0)  # room for the fastest: the whole batch in one step, no recompute
    # Smaller micro-batches first (as fast here), checkpointing only once batch 1 alone does not fit.
    assert [seen[budget][:2] for budget in (24, 12, 6, 4.5)] == [(False, 4), (False, 2), (False, 1), (True, 1)]
    assert seen[4.5][2] == CHECKPOINTING_SPEED["cpu"]
    assert chosen == ("batch_size", "grad_accum", "gradient_checkpointing")


def test_the_persons_fields_are_kept_and_named_when_they_make_the_budget_impossible():
    original, planned = smollm2_plan(batch_size=8, gradient_checkpointing="off", memory_budget_gib=6)
    spec, memory, chosen = fit(original, planned, KNOWN_SHAPES[SMOLLM2_BASE_MODEL], [CPU])
    assert (spec.batch_size, spec.gradient_checkpointing, chosen) == (8, "off", ())
    problem = memory.problem()
    assert "batch_size and gradient_checkpointing as set" in problem and "at least" in problem


def test_a_budget_is_planned_shown_and_checked_at_submit(studio):
    register_parsed(studio, "long", ParsedDataset("messages", long_rows(270)))
    base = {"dataset": "long", "max_length": 256, "grad_accum": 2}
    plain = planned_job(studio, parse_spec(base))
    # No budget: the plan is fitted under this machine's free memory, which the rule's plan fits: kept as it is.
    assert plain.spec.batch_size == 8 and plain.memory.free_on and plain.memory.fits
    assert plain.memory.relative_speed == 1.0 and plain.spec.gradient_checkpointing == "auto"
    tight = {**base, "memory_budget_gib": 0.75}
    planned = planned_job(studio, parse_spec(tight))
    assert planned.spec.batch_size < 8 and planned.spec.batch_size * planned.spec.grad_accum == 16
    assert planned.memory.fits and planned.steps == plain.steps
    # The plan panel, the memory verdict and the script all read the same resolution; the levers' sentence is
    # said once on the Train tab, in the verdict (the plan panel beside it leaves it out).
    peak = f"expected peak {planned.memory.peak_bytes / GiB:.2f} GiB"
    assert peak not in plan_text(studio, tight) and f"{planned.spec.batch_size} × " in plan_text(studio, tight)
    assert peak in verdict_text(studio, tight) and peak in planned.sentence()
    assert f"'trainer.gradient_accumulation_steps': {planned.spec.grad_accum}," in as_code(studio, tight)[1]
    # Below what the base and one short step need: refused at submit with the smallest budget, with other problems.
    with pytest.raises(SpecError) as refused:
        validate_submission(studio, {**base, "memory_budget_gib": 0.3, "eval_dataset": "missing"})
    fields = {problem.field: problem.message for problem in refused.value.problems}
    assert set(fields) == {"memory_budget_gib", "eval_dataset"}
    smallest = float(fields["memory_budget_gib"].rsplit("at least ", 1)[1].split(" GiB")[0])
    validate_submission(studio, {**base, "memory_budget_gib": smallest})  # the smallest it names is enough


def test_without_a_budget_the_devices_free_memory_is_the_budget_and_one_resolution_shows_it(studio):
    """The memory verdict's budget from the workers' rows (what each reports as free now): the rule's plan where it
    fits, the fastest levers that fit where it does not, the plan kept (never refused) where nothing fits."""
    register_parsed(studio, "long", ParsedDataset("messages", long_rows(270)))
    raw = {"dataset": "long", "max_length": 256, "grad_accum": 2}
    with studio.db.write() as session:  # a worker whose device has little free memory (the heartbeat's figure)
        workers_repo.register_worker(session, "w:1", "host", 1, "default", "CPU (2 cores)", 2 * GiB)
        workers_repo.worker_heartbeat(session, "w:1", idle_memory_bytes=int(0.8 * GiB))
    planned = planned_job(studio, parse_spec(raw))
    memory = planned.memory
    assert memory.budget_bytes == int(0.8 * GiB) and memory.free_on.startswith("host default")
    assert memory.fits and planned.spec.batch_size < 8 and planned.spec.batch_size * planned.spec.grad_accum == 16
    sentence = memory.sentence()
    assert "no budget set" in sentence and f"expected peak {memory.peak_bytes / GiB:.2f} GiB" in sentence
    # The verdict (its device's memory is the free memory) and the API's plan read the one resolution; the Train
    # tab says it once, in the verdict, not again in the plan beside it.
    assert sentence in planned.sentence() and "Memory:" not in plan_text(studio, raw)
    verdict = verdict_text(studio, raw)
    assert verdict.count(sentence) == 1 and "| 0.80 GiB |" in verdict
    with studio.db.write() as session:  # a job running: its own use is not free memory for the next, kept as was
        workers_repo.worker_heartbeat(session, "w:1", 7, busy=True)
        workers_repo.worker_heartbeat(session, "w:1", idle_memory_bytes=GiB // 10)
    assert planned_job(studio, parse_spec(raw)).memory.budget_bytes == int(0.8 * GiB)
    with studio.db.write() as session:  # idle again with almost nothing free: nothing fits, the plan is kept
        workers_repo.worker_heartbeat(session, "w:1", 7, busy=False)
        workers_repo.worker_heartbeat(session, "w:1", idle_memory_bytes=GiB // 10)
    kept = planned_job(studio, parse_spec(raw))
    assert kept.spec.batch_size == 8 and not kept.memory.fits and kept.memory.problem() is None
    assert "does not fit" in kept.memory.sentence()
    validate_submission(studio, raw)  # free memory changes while a job waits: never refused for it


def test_train_outside_submit_plans_the_budget_as_submit_does(studio, demo_model_dir):
    """A script calling train() with memory_budget_gib (no submit, no worker) gets the levers submit stores; a
    budget nothing fits is refused there too."""
    from jobs.models.loading import load_tokenizer
    from jobs.training.prepare import planned

    register_parsed(studio, "long", ParsedDataset("messages", long_rows(270)))
    rows, tokenizer = long_rows(270), load_tokenizer(str(demo_model_dir))
    # This process (the script) runs with glibc's malloc; submit plans for this machine's worker, which preloads
    # jemalloc where installed (a smaller allocator factor): with it off, both plan for the same allocator.
    studio.settings = replace(studio.settings, jemalloc=False)
    for budget in (1.2, 0.75):
        spec = parse_spec({"dataset": "long", "max_length": 256, "memory_budget_gib": budget})
        submitted = planned_job(studio, spec).spec  # no worker: both fit this machine
        direct = planned(spec, str(demo_model_dir), rows, tokenizer)
        levers = ("batch_size", "grad_accum", "gradient_checkpointing")
        assert [getattr(direct, n) for n in levers] == [getattr(submitted, n) for n in levers], budget
    with pytest.raises(ValueError, match="memory_budget_gib: .* set at least"):
        planned(parse_spec({"dataset": "long", "max_length": 256, "memory_budget_gib": 0.3}), str(demo_model_dir),
                rows, tokenizer)
