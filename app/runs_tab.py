"""Runs tab: the job table, the selected run's summary (spec, timing, throughput), live curves and log, Cancel.
Reads the database only, so a browser refresh or an app restart shows the same truth."""

from __future__ import annotations

import gradio as gr

from app import views
from app.errors import user_error
from jobs.queue.run_files import export_log, log_tail, train_log_path
from jobs.spec import priority_problem
from jobs.studio import Studio
from jobs.submit import cancel_job
from storage import catalog, jobs_repo, workers_repo
from storage.models import JobKind, JobStatus

REFRESH_S = 2.0
SUMMARY_METRICS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s")
LOG_LINES = 40
MAX_ID = 2**63


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def job_details(studio: Studio, job_id: int) -> dict:
    """One job: status, progress, ETA, timing, latest metrics, median throughput, error, adapter, queue place,
    log tail, spec."""
    details = _details_or_none(studio, _checked_id(job_id))
    if details is None:
        raise user_error(f"job_id: no job with id {job_id}")
    return details


def _checked_id(job_id) -> int:
    """A job id as the ledger can hold it (SQLite integers are 64-bit); anything else is 'no such job'."""
    if isinstance(job_id, bool) or not isinstance(job_id, int) or not 0 < job_id < MAX_ID:
        raise user_error(f"job_id: no job with id {job_id}")
    return job_id


def _details_or_none(studio: Studio, job_id: int) -> dict | None:
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, int(job_id))
        if job is None:
            return None
        summary = views.job_summary(job)
        latest = jobs_repo.latest_metrics(session, [job.id], SUMMARY_METRICS).get(job.id, {})
        speeds = jobs_repo.metric_values(session, job.id, "tokens_per_s")
        peaks = jobs_repo.metric_values(session, job.id, "peak_memory_bytes")
        adapter = catalog.adapter_for_job(session, job.id)
        queue = jobs_repo.queued_job_ids(session)
    summary["metrics"] = {name: latest.get(name) for name in SUMMARY_METRICS}
    summary["tokens_per_s_median"] = views.median_or_none(speeds)
    summary["peak_memory_bytes"] = max(peaks) if peaks else None
    summary["memory_estimate_bytes"] = (job.provenance or {}).get("memory_estimate_bytes")
    summary["timing"] = views.timing_text(job)
    summary["adapter"] = adapter.name if adapter else None
    summary["queue_position"] = queue.index(job.id) + 1 if job.id in queue else None
    summary["queue_length"] = len(queue)
    summary["log_tail"] = log_tail(train_log_path(studio, job.id), LOG_LINES)
    return summary


def job_list(studio: Studio) -> list[dict]:
    with studio.db.read() as session:
        return [views.job_summary(job) for job in jobs_repo.list_jobs(session)]


def cancel(studio: Studio, job_id: int) -> str:
    try:
        return cancel_job(studio, _checked_id(job_id))
    except LookupError:
        raise user_error(f"job_id: no job with id {job_id}") from None


def move(studio: Studio, job_id: int, where: str) -> list[int]:
    """Move a queued job (front, up, down, back); returns the queue's new order (job ids, first runs first)."""
    if where not in jobs_repo.MOVES:
        raise user_error(f"where: one of {', '.join(jobs_repo.MOVES)}, not '{where}'")
    try:
        with studio.db.write() as session:
            return jobs_repo.move_job(session, _checked_id(job_id), where)
    except LookupError:
        raise user_error(f"job_id: job {job_id} is not queued") from None


def reprioritize(studio: Studio, job_id: int, priority: int) -> list[int]:
    """Change a queued job's priority; returns the queue's new order."""
    if problem := priority_problem(priority):
        raise user_error(f"priority: {problem}")
    try:
        with studio.db.write() as session:
            jobs_repo.set_priority(session, _checked_id(job_id), priority)
            return jobs_repo.queued_job_ids(session)
    except LookupError:
        raise user_error(f"job_id: job {job_id} is not queued") from None


def worker_list(studio: Studio) -> list[dict]:
    """Live workers: host, device, memory, what each runs, last heartbeat."""
    with studio.db.read() as session:
        workers = workers_repo.live_workers(session, studio.settings.lease_s)
    return [views.worker_summary(worker) for worker in workers]


def jobs_frame(studio: Studio):
    with studio.db.read() as session:
        jobs = jobs_repo.list_jobs(session)
        latest = jobs_repo.latest_metrics(session, [job.id for job in jobs], ("loss", "eval_loss"))
    return views.jobs_table(jobs, latest)


def queued_count(studio: Studio) -> int:
    with studio.db.read() as session:
        return len(jobs_repo.queued_job_ids(session))


def _newest_job_id(studio: Studio) -> int | None:
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
    if job["peak_memory_bytes"] or job["memory_estimate_bytes"]:
        measured = f"{job['peak_memory_bytes'] / 2**30:.2f} GiB measured" if job["peak_memory_bytes"] else "not yet"
        estimated = (f", {job['memory_estimate_bytes'] / 2**30:.2f} GiB estimated before it ran"
                     if job["memory_estimate_bytes"] else "")
        lines.append(f"**Peak memory:** {measured}{estimated}")
    if job["adapter"]:
        lines.append(f"**Adapter:** {job['adapter']}")
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
    changed, same = views.spec_changes(job["spec"])
    lines.append("**Spec** (changed from the defaults):\n" + ("\n".join(f"- {line}" for line in changed)
                                                             or "- nothing: all defaults"))
    lines.append("<details><summary>Other spec fields (defaults)</summary>\n\n"
                 + "\n".join(f"- {line}" for line in same) + "\n</details>")
    return "\n\n".join(lines)


def _parse_job_id(text) -> int | None:
    try:
        job_id = int(str(text).strip())
    except ValueError:
        return None
    return job_id if 0 < job_id < MAX_ID else None


def _details(studio: Studio, picked):
    """Summary, loss curve, log tail and log download of the picked job, or of the newest one when none is."""
    job_id = _parse_job_id(picked) if str(picked or "").strip() else _newest_job_id(studio)
    if job_id is None and not str(picked or "").strip():
        return "No jobs yet: submit one in the Train tab.", views.loss_curve([]), "", None
    job = _details_or_none(studio, job_id) if job_id is not None else None
    if job is None:
        return f"No job with id {picked}.", views.loss_curve([]), "", None
    log_file = export_log(studio, job["id"])
    return _summary_text(job), _loss_curve(studio, job["id"]), job["log_tail"], str(log_file) if log_file else None


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, app: gr.Blocks) -> None:
    table = gr.Dataframe(interactive=False, label="Jobs (click a row to follow it)", elem_id="jobs-table")
    with gr.Row():
        selected = gr.Textbox(label="Job id", placeholder="click a row; empty follows the newest job",
                              elem_id="selected-job", scale=2)
        cancel_button = gr.Button("Cancel job", variant="stop", scale=1)
    with gr.Row(elem_id="queue-controls"):
        move_buttons = {where: gr.Button(label, size="sm", elem_id=f"move-{where}")
                        for where, label in (("front", "⇈ To front"), ("up", "↑ Up"), ("down", "↓ Down"),
                                             ("back", "⇊ To back"))}
        new_priority = gr.Number(label="Priority", precision=0, value=0, scale=1, min_width=100)
        priority_button = gr.Button("Set priority", size="sm")
    with gr.Accordion("Workers", open=False):
        workers = gr.Dataframe(interactive=False, elem_id="workers-table")
    with gr.Row():
        with gr.Column(scale=2):
            summary = gr.Markdown(elem_id="job-summary")
        with gr.Column(scale=3):
            plot = gr.LinePlot(x="step", y="value", color="series", title="Loss", height=300, elem_id="loss-plot")
    log = gr.Textbox(label="Log (the end, followed while the job runs)", lines=12, max_lines=12,
                     elem_id="log-tail")
    log_download = gr.DownloadButton("Download the whole log", value=None, elem_id="log-download", size="sm")
    timer = gr.Timer(REFRESH_S)

    def refresh(picked):
        return jobs_frame(studio), *_details(studio, picked)

    def on_select(event: gr.SelectData):
        return str(event.row_value[0])

    def on_cancel(picked):
        job_id = _parse_job_id(picked)
        if job_id is None:
            raise user_error("job_id: select a job first (click its row)")
        status = cancel(studio, job_id)
        gr.Info(f"Job {job_id}: {'cancel requested' if status == 'running' else status}.")

    def on_move(picked, where):
        job_id = _parse_job_id(picked)
        if job_id is None:
            raise user_error("job_id: select a queued job first (click its row)")
        order = move(studio, job_id, where)
        gr.Info(f"Job {job_id} is now {order.index(job_id) + 1} of {len(order)} in the queue.")
        return jobs_frame(studio)

    def on_priority(picked, priority):
        job_id = _parse_job_id(picked)
        if job_id is None:
            raise user_error("job_id: select a queued job first (click its row)")
        order = reprioritize(studio, job_id, int(priority or 0))
        gr.Info(f"Job {job_id}: priority {int(priority or 0)}, now {order.index(job_id) + 1} of {len(order)}.")
        return jobs_frame(studio)

    for where, button in move_buttons.items():
        button.click(lambda picked, w=where: on_move(picked, w), selected, table, api_visibility="private")
    priority_button.click(on_priority, [selected, new_priority], table, api_visibility="private")

    outputs = [table, summary, plot, log, log_download]
    quiet = dict(api_visibility="private", show_progress="hidden")  # no "processing" flicker every refresh
    timer.tick(refresh, selected, outputs, **quiet)
    timer.tick(lambda: views.workers_table(worker_list(studio), queued_count(studio)), None, workers, **quiet)
    app.load(refresh, selected, outputs, **quiet)
    table.select(on_select, None, selected, **quiet)
    selected.change(refresh, selected, outputs, **quiet)
    cancel_button.click(on_cancel, selected, None, api_visibility="private")
