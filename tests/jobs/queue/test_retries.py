"""Out of memory, the retry needs less: the micro-batch halves (same effective batch), then checkpointing, then
halving again, until nothing is left to shrink."""

from jobs.queue.retries import killed_for_memory, smaller_footprint
from jobs.spec import parse_spec


def test_the_ladder_of_smaller_footprints():
    spec = parse_spec({"batch_size": 4, "grad_accum": 1})
    fields, steps = {}, []
    while (smaller := smaller_footprint(spec, fields)) is not None:
        fields, why = smaller
        steps.append((fields.get("batch_size", 4), fields.get("grad_accum", 1), fields.get("gradient_checkpointing")))
        assert why
    assert steps == [(2, 2, None), (2, 2, "on"), (1, 4, "on")]


def test_a_kill_counts_as_memory_only_near_the_limit():
    assert killed_for_memory(9e9, 10 * 2**30) is False and killed_for_memory(9.5 * 2**30, 10 * 2**30)
    assert killed_for_memory(None, 10) is False


def test_a_cuda_out_of_memory_error_requeues_the_job_smaller(studio):
    """No GPU here: the error is torch's real CUDA OOM class, constructed rather than raised by a device."""
    import torch

    from jobs.failures import explain_failure, is_out_of_memory
    from jobs.queue.child import EXIT_OUT_OF_MEMORY
    from jobs.queue.supervisor import _record_outcome
    from jobs.submit import submit_job
    from storage import jobs_repo

    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_out_of_memory(error) and explain_failure(error).startswith("Out of memory while training")
    job_id = submit_job(studio, {"batch_size": 8, "grad_accum": 2})
    with studio.db.write() as s:
        attempt = jobs_repo.claim_job(s, job_id, "test:1")
    _record_outcome(studio, job_id, attempt, EXIT_OUT_OF_MEMORY, studio.settings.runs_dir / f"job-{job_id}")
    with studio.db.read() as s:
        job = jobs_repo.get_job(s, job_id)
    assert job.status == "queued" and job.lost_count == 1
    assert job.overrides["fields"] == {"batch_size": 4, "grad_accum": 4}
    assert job.overrides["why"] == [f"attempt {attempt} ran out of memory: halved the micro-batch to 4 and doubled "
                                    f"gradient accumulation to 4 (the same effective batch)"]
