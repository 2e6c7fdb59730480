"""Out of memory, the retry needs less, by the plan's own memory levers in the plan's own order (jobs.models.budget):
the fastest candidate of the levers the person left to the studio that needs no more of any lever than the attempt
that failed and less of one (a smaller micro-batch, counted as fast as the plan counts it; two forward passes a packed
sequence; checkpointing), until nothing is left to shrink. A lever the person set is never changed, and a step
trains the same tokens throughout."""

from dataclasses import replace

import pytest

from jobs.data.formats import ParsedDataset
from jobs.data.store import register_parsed
from jobs.models.budget import GiB, peak_of
from jobs.models.fits import KNOWN_SHAPES, Device
from jobs.queue.retries import FitInputs, killed_for_memory, nothing_left_words, smaller_footprint
from jobs.run_settings.settings import Base, resolve
from jobs.spec import SMOLLM2_BASE_MODEL, TrainSpec, parse_spec
from storage import jobs_repo, workers_repo
from tests.word_rows import word_rows

SMOLLM2 = KNOWN_SHAPES[SMOLLM2_BASE_MODEL]
CPU = Device("this machine", "CPU (2 cores)", 64 * GiB)
GPU = Device("gpu host", "NVIDIA H100 80GB HBM3", 80 * GiB)
PLANNED = {"base_model": SMOLLM2_BASE_MODEL, "packing": True, "max_length": 512, "batch_size": 4, "grad_accum": 1,
           "learning_rate": 3e-3, "num_epochs": 1.0, "eval_fraction": 0.0}
"""A packed SFT job as submit stores it (the plan's choices filled in)."""
HALF_FITS = 200
"""A longest row that half of max_length holds: two forward passes cut no row."""


def _tokens_a_step(spec: TrainSpec, device: Device = CPU) -> int:
    settings = resolve(spec, Base(hidden=SMOLLM2.hidden), device.machine)
    return settings.batch_size * settings.max_length * settings.grad_accum


def _ladder(stored: TrainSpec, inputs: FitInputs) -> tuple[list[tuple], dict]:
    """Each retry's (micro-batch, grad_accum, pack_length, checkpointing, why) until nothing is left; the last
    fields."""
    fields, steps = {}, []
    while (smaller := smaller_footprint(stored, fields, inputs)) is not None:
        fields, why = smaller
        spec = TrainSpec.model_validate({**stored.model_dump(), **fields})
        assert _tokens_a_step(spec) == _tokens_a_step(stored)  # the same effective batch: the same steps and tokens
        steps.append((spec.batch_size, spec.grad_accum, spec.pack_length, spec.gradient_checkpointing, why))
    return steps, fields


HALVED = "halved the micro-batch to {} and doubled gradient accumulation to {} (the same effective batch)"
SPLIT = "split each packed sequence into two forward passes of 256 tokens (the same tokens a step)"
CHECKPOINTING = "turned gradient checkpointing on"


def test_the_plans_levers_in_the_plans_order_each_estimated_smaller():
    """The batch the plan chose halves first (the plan counts a smaller micro-batch of the same tokens as fast, and
    keeps the largest among equals), then the pass splits (0.85x on a CPU), then checkpointing (0.69x)."""
    stored = parse_spec(PLANNED)
    inputs = FitInputs(frozenset({"batch_size"}), HALF_FITS, (CPU,), SMOLLM2)
    steps, _ = _ladder(stored, inputs)
    assert steps == [(2, 2, None, "auto", HALVED.format(2, 2)), (1, 4, None, "auto", HALVED.format(1, 4)),
                     (1, 4, 256, "auto", SPLIT), (1, 4, 256, "on", CHECKPOINTING)]
    specs = [stored, *(stored.model_copy(update={"batch_size": b, "grad_accum": a, "pack_length": p,
                                                "gradient_checkpointing": gc}) for b, a, p, gc, _ in steps)]
    peaks = [peak_of(spec, SMOLLM2, [CPU], HALF_FITS, None) for spec in specs]
    assert peaks == sorted(peaks, reverse=True) and len(set(peaks)) == len(peaks)  # each estimated below the last
    # Without an estimate (the base's config not here) the order alone gives the same steps.
    assert _ladder(stored, FitInputs(frozenset({"batch_size"}), HALF_FITS))[0] == steps


def test_the_persons_micro_batch_is_kept_and_the_pass_splits_before_checkpointing():
    stored = parse_spec(PLANNED)  # batch_size 4 is the person's: not among the plan's choices
    inputs = FitInputs(frozenset(), HALF_FITS, (CPU,), SMOLLM2)
    steps, fields = _ladder(stored, inputs)
    assert steps == [(4, 1, 256, "auto", SPLIT), (4, 1, 256, "on", CHECKPOINTING)]
    assert nothing_left_words(stored, fields, inputs) == (
        "already at its smallest footprint: micro-batch 4, gradient checkpointing on, each packed sequence in two "
        "forward passes of 256 tokens. To need less, leave batch_size to the studio (empty or 'auto'), or use a "
        "smaller max_length, rank or base model")


@pytest.mark.parametrize("pack_length", [512, 256])
def test_the_persons_pack_length_is_never_changed(pack_length):
    stored = parse_spec({**PLANNED, "pack_length": pack_length})
    steps, _ = _ladder(stored, FitInputs(frozenset({"batch_size"}), HALF_FITS, (CPU,), SMOLLM2))
    assert [step[2] for step in steps] == [pack_length] * 3
    assert [step[4] for step in steps] == [HALVED.format(2, 2), HALVED.format(1, 4), CHECKPOINTING]


@pytest.mark.parametrize("fields", [{"packing": False}, {"method": "dpo"}])
def test_an_unpacked_or_preference_run_never_gets_a_pack_length(fields):
    stored = parse_spec({**PLANNED, **fields})
    inputs = FitInputs(frozenset({"batch_size"}), HALF_FITS, (CPU,), SMOLLM2)
    steps, last = _ladder(stored, inputs)
    assert [step[4] for step in steps] == [HALVED.format(2, 2), HALVED.format(1, 4), CHECKPOINTING]
    assert "pack_length" not in last and "pack_length" not in nothing_left_words(stored, last, inputs)


def test_a_row_the_split_would_cut_leaves_one_pass_and_the_failure_says_why():
    stored = parse_spec(PLANNED)
    for longest, why in ((300, "(pack_length: two passes of 256 would cut the data's longest row of 300 tokens)"),
                         (0, "(pack_length: the data's longest row is not known here, so no pass is split)")):
        inputs = FitInputs(frozenset(), longest, (CPU,), SMOLLM2)
        steps, fields = _ladder(stored, inputs)
        assert steps == [(4, 1, None, "on", CHECKPOINTING)]
        assert f"each packed sequence in one forward pass of 512 tokens {why}" in nothing_left_words(
            stored, fields, inputs)


def test_earlier_retries_count_as_made_and_are_never_undone():
    stored = parse_spec(PLANNED)
    inputs = FitInputs(frozenset({"batch_size"}), HALF_FITS, (CPU,), SMOLLM2)
    fields, why = smaller_footprint(stored, {"gradient_checkpointing": "on"}, inputs)
    assert fields == {"gradient_checkpointing": "on", "batch_size": 2, "grad_accum": 2} and why == HALVED.format(2, 2)
    fields, why = smaller_footprint(stored, {"pack_length": 256}, inputs)
    assert fields == {"pack_length": 256, "batch_size": 2, "grad_accum": 2}


def test_on_a_gpu_auto_checkpointing_is_already_on():
    stored = parse_spec(PLANNED)
    steps, fields = _ladder(stored, FitInputs(frozenset(), HALF_FITS, (GPU,), SMOLLM2))
    assert steps == [(4, 1, 256, "auto", SPLIT)] and "gradient_checkpointing" not in fields


def test_a_kill_counts_as_memory_only_near_the_limit():
    assert killed_for_memory(9e9, 10 * 2**30) is False and killed_for_memory(9.5 * 2**30, 10 * 2**30)
    assert killed_for_memory(None, 10) is False


def _rows(count: int) -> list[dict]:
    """Rows of under 128 demo tokens: two a packed sequence of 256, and half of 256 holds each."""
    return word_rows(count, 10, 20)


def _submitted(studio, raw: dict) -> int:
    from jobs.submit import submit_job

    register_parsed(studio, "rows", ParsedDataset("messages", _rows(270)))
    with studio.db.write() as session:  # a worker with room: the plan at submit is the rule's, whatever is free here
        workers_repo.register_worker(session, "w:1", "host", 1, "default", "CPU (2 cores)", 64 * GiB)
    return submit_job(studio, {"dataset": "rows", "max_length": 256, **raw})


def _out_of_memory(studio, job_id: int):
    from jobs.queue.child import EXIT_OUT_OF_MEMORY
    from jobs.queue.supervisor import _record_outcome

    with studio.db.write() as s:
        attempt = jobs_repo.claim_job(s, job_id, "test:1")
    _record_outcome(studio, job_id, attempt, EXIT_OUT_OF_MEMORY, studio.settings.runs_dir / f"job-{job_id}")
    with studio.db.read() as s:
        return attempt, jobs_repo.get_job(s, job_id)


def test_a_cuda_out_of_memory_error_requeues_the_job_smaller(studio):
    """No GPU here: the error is torch's real CUDA OOM class, constructed rather than raised by a device."""
    import torch

    from jobs.failures import explain_failure, is_out_of_memory

    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_out_of_memory(error) and explain_failure(error).startswith("Out of memory while training")
    job_id = _submitted(studio, {"grad_accum": 2})
    attempt, job = _out_of_memory(studio, job_id)
    assert job.spec["batch_size"] == 4 and "batch_size" in job.provenance["plan"]["chosen"]  # the plan's batch
    assert job.provenance["plan"]["longest_row"] <= 128  # stored at submit: a retry never counts the rows again
    assert job.status == "queued" and job.lost_count == 1
    assert job.overrides["fields"] == {"batch_size": 2, "grad_accum": 4}
    assert job.overrides["why"] == [f"attempt {attempt} ran out of memory: {HALVED.format(2, 4)}"]


def test_the_requeued_attempt_trains_with_the_retrys_levers_until_none_is_left(studio):
    """On the demo base (two layers) the estimate expects checkpointing to peak no lower, so after the split nothing
    is left, and the failure says so."""
    from jobs.spec_store import load_stored_spec

    studio = replace(studio, settings=replace(studio.settings, max_attempts=10))
    job_id = _submitted(studio, {"batch_size": 2})  # the person's micro-batch: kept
    attempt, job = _out_of_memory(studio, job_id)
    split = SPLIT.replace("256", "128")
    assert job.status == "queued" and job.overrides == {"fields": {"pack_length": 128},
                                                        "why": [f"attempt 1 ran out of memory: {split}"]}
    # What the next attempt's child trains with (jobs.queue.child): the stored spec with the overrides on top.
    spec = load_stored_spec(job.spec, job.overrides["fields"]).require()
    settings = resolve(spec, Base(hidden=128), CPU.machine)
    assert (settings.max_length, settings.grad_accum, settings.batch_size) == (128, 2, 2)  # the same tokens a step
    attempt, job = _out_of_memory(studio, job_id)
    assert job.status == "failed" and job.error.startswith(
        "The training process ran out of memory, already at its smallest footprint: micro-batch 2, gradient "
        "checkpointing off, each packed sequence in two forward passes of 128 tokens (the plan's estimate expects no "
        "lower peak from a retry that turned gradient checkpointing on). To need less, leave batch_size to the studio "
        "(empty or 'auto'), or use a smaller max_length, rank or base model.")
