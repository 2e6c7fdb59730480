"""The selected run, as the Runs tab shows it: its summary (status, timing, throughput, memory, spec), its loss
curve, a timeline of any metric, its sample answers step by step beside the base model's, and its log."""

from __future__ import annotations

import statistics

from app import views
from app.runs import charts
from app.web.errors import user_error
from jobs.queue.run_files import export_log, log_tail, run_dir_for, train_log_path
from jobs.run_settings.tracking import VIEWERS, tracking_text
from jobs.spec_store import load_stored_spec
from jobs.studio import Studio
from jobs.training.phases import METRIC_PREFIX, PHASES
from storage import catalog, jobs_repo
from storage.models import JobKind, JobStatus

PHASE_METRICS = tuple(f"{METRIC_PREFIX}{name}" for name in PHASES)
SUMMARY_METRICS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s")
LOG_LINES = 40
MAX_ID = 2**63


def checked_id(job_id) -> int:
    """A job id as the ledger can hold it (SQLite integers are 64-bit); anything else is 'no such job'."""
    if isinstance(job_id, bool) or not isinstance(job_id, int) or not 0 < job_id < MAX_ID:
        raise user_error(f"job_id: no job with id {job_id}")
    return job_id


def job_pace(session, job) -> views.Pace | None:
    """What a running job's ETA is measured from (None for any other job, or before its first logged step)."""
    if job.status != JobStatus.RUNNING:
        return None
    first = jobs_repo.first_step_logged(session, job)
    if first is None:
        return None
    finishing = jobs_repo.finishing_seconds(session)
    return views.Pace(first[0], first[1], statistics.median(finishing) if finishing else 0.0)


def details_or_none(studio: Studio, job_id: int) -> dict | None:
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, int(job_id))
        if job is None:
            return None
        summary = views.job_summary(job, job_pace(session, job))
        latest = jobs_repo.latest_metrics(session, [job.id], SUMMARY_METRICS + PHASE_METRICS).get(job.id, {})
        speeds = jobs_repo.metric_values(session, job.id, "tokens_per_s")
        peaks = jobs_repo.metric_values(session, job.id, "peak_memory_bytes")
        adapter = catalog.adapter_for_job(session, job.id)
        queue = jobs_repo.queued_job_ids(session)
    summary["metrics"] = {name: latest.get(name) for name in SUMMARY_METRICS}
    summary["phases_s"] = {name.removeprefix(METRIC_PREFIX): latest[name] for name in PHASE_METRICS if name in latest}
    summary["tokens_per_s_median"] = views.median_or_none(speeds)
    summary["peak_memory_bytes"] = max(peaks) if peaks else None
    summary["memory_estimate_bytes"] = (job.provenance or {}).get("memory_estimate_bytes")
    summary["timing"] = views.timing_text(job)
    summary["adapter"] = adapter.name if adapter else None
    summary["queue_position"] = queue.index(job.id) + 1 if job.id in queue else None
    summary["queue_length"] = len(queue)
    summary["log_tail"] = log_tail(train_log_path(studio, job.id), LOG_LINES)
    report_to = (summary.get("spec") or {}).get("report_to", "none") if summary["kind"] == JobKind.TRAIN else "none"
    summary["tracking"] = tracking_text(run_dir_for(studio, job.id), report_to if report_to in VIEWERS else "none")
    return summary


def newest_job_id(studio: Studio) -> int | None:
    with studio.db.read() as session:
        newest = jobs_repo.list_jobs(session, limit=1)
    return newest[0].id if newest else None


def _loss_curve(studio: Studio, job_id: int):
    with studio.db.read() as session:
        return views.loss_curve(jobs_repo.metrics_for(session, int(job_id)))


def _summary_text(job: dict) -> str:
    lines = [f"### Job {job['id']}: {job['name']}", f"**Status:** {job['status']}"
             + (f" · {job['timing']}" if job["timing"] else "")]
    if job["queue_position"]:
        lines.append(f"**Queue:** {job['queue_position']} of {job['queue_length']} (higher priority first, then "
                     f"oldest; one job per worker at a time)")
    if job["progress"]:
        lines.append(f"**Progress:** {job['progress']}")
    if job["eta_s"] is not None:
        lines.append(f"**ETA:** {views.human_duration(job['eta_s'])}")
    if job["tokens_per_s_median"]:
        lines.append(f"**Throughput:** {job['tokens_per_s_median']:.0f} non-pad tokens/s (median over the run's "
                     f"log intervals; an interval with an eval or a checkpoint save reads lower)")
    if breakdown := views.time_breakdown(job):
        lines.append(f"**Where the time went:** {breakdown}")
    if job["peak_memory_bytes"] or job["memory_estimate_bytes"]:
        measured = f"{job['peak_memory_bytes'] / 2**30:.2f} GiB measured" if job["peak_memory_bytes"] else "not yet"
        estimated = (f", {job['memory_estimate_bytes'] / 2**30:.2f} GiB estimated before it ran"
                     if job["memory_estimate_bytes"] else "")
        lines.append(f"**Peak memory:** {measured}{estimated}")
    if job["adapter"]:
        lines.append(f"**Adapter:** {job['adapter']}")
    if job.get("tracking"):
        lines.append(f"**Tracking:** {job['tracking']}")
    if job["cancel_requested"] and job["status"] == JobStatus.RUNNING:
        lines.append("**Cancelling…**")
    if job["error"]:
        # Only a failure is an error; a cancel or a requeue leaves a note.
        heading = "Error" if job["status"] == JobStatus.FAILED else "Note"
        lines.append(f"**{heading}:**\n```text\n{job['error']}\n```")
    if job["overrides"]:
        lines.append("**Changed for a retry:**\n" + "\n".join(f"- {why}" for why in job["overrides"].get("why", [])))
    if job["kind"] == JobKind.MERGE:
        lines.append(f"**Merges** adapter `{job['spec']['adapter']}` into a {job['spec']['dtype']} copy of its base.")
        return "\n\n".join(lines)
    if job["kind"] == JobKind.COMBINE:
        lines.append(f"**Makes** adapter `{job['spec']['name']}`, {views.combination_text(job['spec'])}, with "
                     f"PEFT's add_weighted_adapter.")
        return "\n\n".join(lines)
    if job["kind"] == JobKind.EVAL:
        spec, pins = job["spec"], (job.get("provenance") or {}).get("pinned") or {}
        panes = ", ".join(f"`{pane['name']}`" for pane in pins.get("adapters", []))
        where = spec.get("suite") or spec.get("dataset") or f"job {spec.get('train_job')}'s held-out rows"
        lines.append(f"**Evaluates** {panes} on {where} (at most {spec.get('max_rows')} rows); progress counts "
                     f"answers. The results are in the Evaluate tab.")
        return "\n\n".join(lines)
    if job["kind"] == JobKind.EXPORT:
        lines.append(f"**Exports** adapter `{job['spec']['adapter']}` as a {job['spec']['quantization']} GGUF with "
                     "an Ollama Modelfile; download it from the Adapters tab.")
        return "\n\n".join(lines)
    step_plan = (job.get("provenance") or {}).get("plan") or {}
    if step_plan:
        lines.append(f"**Plan at submit:** {step_plan['steps']:,} optimizer steps over {step_plan['tokens']:,} "
                     f"tokens{'' if step_plan.get('tokens_counted') else ' (estimated from characters)'}.")
    stored = load_stored_spec(job["spec"])
    if stored.problems:
        lines.append(f"**Spec problem:** {stored.problems_text()} Clone the run into the Train form to fix it.")
    changed, same = views.spec_changes(stored.fields, step_plan.get("chosen"))
    lines.append("**Spec** (changed from the defaults):\n" + ("\n".join(f"- {line}" for line in changed)
                                                             or "- nothing: all defaults"))
    lines.append("<details><summary>Other spec fields (defaults)</summary>\n\n"
                 + "\n".join(f"- {line}" for line in same) + "\n</details>")
    return "\n\n".join(lines)


def parse_job_id(text) -> int | None:
    try:
        job_id = int(str(text).strip())
    except ValueError:
        return None
    return job_id if 0 < job_id < MAX_ID else None


def timeline(studio: Studio, job_id: int | None, show: str):
    """One run's chosen metrics over its steps, as an image."""
    if job_id is None:
        return charts.overlay({}, "step", show)
    with studio.db.read() as session:
        metrics = jobs_repo.metrics_for(session, job_id)
    return charts.overlay({f"job {job_id}": views.run_curves(metrics, views.TIMELINES[show])}, "step", show)


def samples(studio: Studio, job_id: int | None):
    with studio.db.read() as session:
        found = jobs_repo.samples_for(session, job_id) if job_id is not None else []
        job = jobs_repo.get_job(session, job_id) if found else None
        spec = job.spec if job is not None else {}
    return views.samples_table(found, held_out=bool(spec.get("eval_dataset") or spec.get("eval_fraction")))


def details(studio: Studio, picked):
    """Summary, loss curve, log tail and log download of the picked job, or of the newest one when none is."""
    job_id = parse_job_id(picked) if str(picked or "").strip() else newest_job_id(studio)
    if job_id is None and not str(picked or "").strip():
        return "No jobs yet: submit one in the Train tab.", views.loss_curve([]), "", None
    job = details_or_none(studio, job_id) if job_id is not None else None
    if job is None:
        return f"No job with id {picked}.", views.loss_curve([]), "", None
    log_file = export_log(studio, job["id"], job.get("owner"))
    return _summary_text(job), _loss_curve(studio, job["id"]), job["log_tail"], str(log_file) if log_file else None


