"""Runs tab: the job table, the selected run's live curves and log, Cancel. Reads the database only, so a
browser refresh or an app restart shows the same truth."""

from __future__ import annotations

import gradio as gr

from app import views
from jobs.queue.run_files import log_tail, train_log_path
from jobs.studio import Studio
from jobs.submit import cancel_job
from storage import catalog, jobs_repo

REFRESH_S = 2.0
SUMMARY_METRICS = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s")
API_LOG_LINES = 40


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def job_details(studio: Studio, job_id: int) -> dict:
    """One job: status, progress, ETA, latest metrics, error, adapter name, queue place, log tail."""
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, int(job_id))
        if job is None:
            raise gr.Error(f"job_id: no job with id {job_id}")
        summary = views.job_summary(job)
        latest = jobs_repo.latest_metrics(session, [job.id], SUMMARY_METRICS).get(job.id, {})
        adapter = catalog.adapter_for_job(session, job.id)
        queue = jobs_repo.queued_job_ids(session)
    summary["metrics"] = {name: latest.get(name) for name in SUMMARY_METRICS}
    summary["adapter"] = adapter.name if adapter else None
    summary["queue_position"] = queue.index(job.id) + 1 if job.id in queue else None
    summary["queue_length"] = len(queue)
    summary["log_tail"] = log_tail(train_log_path(studio, job.id), API_LOG_LINES)
    return summary


def job_list(studio: Studio) -> list[dict]:
    with studio.db.read() as session:
        return [views.job_summary(job) for job in jobs_repo.list_jobs(session)]


def cancel(studio: Studio, job_id: int) -> str:
    try:
        return cancel_job(studio, int(job_id))
    except (LookupError, TypeError, ValueError):
        raise gr.Error(f"job_id: no job with id {job_id}") from None


def jobs_frame(studio: Studio):
    with studio.db.read() as session:
        jobs = jobs_repo.list_jobs(session)
        latest = jobs_repo.latest_metrics(session, [job.id for job in jobs], ("loss", "eval_loss"))
    return views.jobs_table(jobs, latest)


def _newest_job_id(studio: Studio) -> int | None:
    with studio.db.read() as session:
        newest = jobs_repo.list_jobs(session, limit=1)
    return newest[0].id if newest else None


def _loss_curve(studio: Studio, job_id: int):
    with studio.db.read() as session:
        return views.loss_curve(jobs_repo.metrics_for(session, int(job_id)))


def _summary_text(job: dict) -> str:
    lines = [f"### Job {job['id']}: {job['name']}", f"**Status:** {job['status']}"]
    if job["queue_position"]:
        lines.append(f"**Queue:** {job['queue_position']} of {job['queue_length']} (higher priority first, then "
                     f"oldest; one job per worker at a time)")
    if job["progress"]:
        lines.append(f"**Progress:** {job['progress']}")
    if job["eta_s"] is not None:
        lines.append(f"**ETA:** {views.human_duration(job['eta_s'])}")
    speed = job["metrics"].get("tokens_per_s")
    if speed:
        lines.append(f"**Throughput:** {speed:.0f} non-pad tokens/s")
    if job["adapter"]:
        lines.append(f"**Adapter:** {job['adapter']}")
    if job["cancel_requested"] and job["status"] == "running":
        lines.append("**Cancelling…**")
    if job["error"]:
        lines.append(f"**Error:**\n```text\n{job['error']}\n```")
    return "\n\n".join(lines)


def _details(studio: Studio, job_id):
    """Summary, loss curve and log tail of the picked job, or of the newest one when nothing is picked."""
    if not job_id:
        job_id = _newest_job_id(studio)
        if job_id is None:
            return "No jobs yet: submit one in the Train tab.", views.loss_curve([]), ""
    try:
        job = job_details(studio, int(job_id))
    except gr.Error:
        return f"No job with id {job_id}.", views.loss_curve([]), ""
    return _summary_text(job), _loss_curve(studio, job["id"]), job["log_tail"]


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio) -> None:
    table = gr.Dataframe(value=lambda: jobs_frame(studio), interactive=False,
                         label="Jobs (click a row to follow it)", elem_id="jobs-table")
    with gr.Row():
        selected = gr.Number(label="job id", precision=0, value=None, elem_id="selected-job")
        cancel_button = gr.Button("Cancel job", variant="stop")
    with gr.Row():
        with gr.Column(scale=2):
            summary = gr.Markdown(elem_id="job-summary")
        with gr.Column(scale=3):
            plot = gr.LinePlot(x="step", y="value", color="series", title="Loss", height=300, elem_id="loss-plot")
    log = gr.Textbox(label="Log tail", lines=12, max_lines=12, autoscroll=True, elem_id="log-tail")
    timer = gr.Timer(REFRESH_S)

    def refresh(job_id):
        return jobs_frame(studio), *_details(studio, job_id)

    def on_select(event: gr.SelectData):
        return event.row_value[0]

    def on_cancel(job_id):
        if not job_id:
            raise gr.Error("job_id: select a job first (click its row)")
        status = cancel(studio, int(job_id))
        gr.Info(f"Job {int(job_id)}: {'cancel requested' if status == 'running' else status}.")

    outputs = [table, summary, plot, log]
    timer.tick(refresh, selected, outputs, api_visibility="private")
    table.select(on_select, None, selected, api_visibility="private")
    selected.change(refresh, selected, outputs, api_visibility="private")
    cancel_button.click(on_cancel, selected, None, api_visibility="private")
