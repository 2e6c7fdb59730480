"""Runs tab: the job table, the selected run's live curves and log, Cancel. Reads the database only, so a
browser refresh or an app restart shows the same truth."""

from __future__ import annotations

import gradio as gr

from app.handlers import StudioHandlers
from app.views import loss_curve

REFRESH_S = 2.0


def _details(handlers: StudioHandlers, job_id):
    if not job_id:  # nothing picked (the number box shows 0): follow the newest job
        job_id = handlers.newest_job_id()
        if job_id is None:
            return "No jobs yet: submit one in the Train tab.", loss_curve([]), "", None
    try:
        job = handlers.job(int(job_id))
    except gr.Error:
        return f"No job with id {job_id}.", loss_curve([]), "", None
    lines = [f"### Job {job['id']}: {job['name']}", f"**Status:** {job['status']}"]
    if job["queue_position"]:
        lines.append(f"**Queue:** {job['queue_position']} of {job['queue_length']} (higher priority first, then "
                     f"oldest; one job per worker at a time)")
    if job["progress"]:
        lines.append(f"**Progress:** {job['progress']}")
    if job["eta_s"] is not None:
        from app.views import human_duration

        lines.append(f"**ETA:** {human_duration(job['eta_s'])}")
    speed = job["metrics"].get("tokens_per_s")
    if speed:
        lines.append(f"**Throughput:** {speed:.0f} non-pad tokens/s")
    if job["adapter"]:
        lines.append(f"**Adapter:** {job['adapter']}")
    if job["cancel_requested"] and job["status"] == "running":
        lines.append("**Cancelling…**")
    if job["error"]:
        lines.append(f"**Error:**\n```text\n{job['error']}\n```")
    return "\n\n".join(lines), handlers.loss_curve(job["id"]), job["log_tail"], job["id"]


def build(handlers: StudioHandlers) -> None:
    table = gr.Dataframe(value=handlers.jobs_frame, interactive=False, label="Jobs (click a row to follow it)",
                         elem_id="jobs-table")
    with gr.Row():
        selected = gr.Number(label="job id", precision=0, value=None, elem_id="selected-job")
        cancel = gr.Button("Cancel job", variant="stop")
    with gr.Row():
        with gr.Column(scale=2):
            summary = gr.Markdown(elem_id="job-summary")
        with gr.Column(scale=3):
            plot = gr.LinePlot(x="step", y="value", color="series", title="Loss", height=300, elem_id="loss-plot")
    log = gr.Textbox(label="Log tail", lines=12, max_lines=12, autoscroll=True, elem_id="log-tail")
    timer = gr.Timer(REFRESH_S)

    def refresh(job_id):
        text, curve, tail, _ = _details(handlers, job_id)
        return handlers.jobs_frame(), text, curve, tail

    def on_select(event: gr.SelectData):
        return event.row_value[0]

    def on_cancel(job_id):
        if not job_id:
            raise gr.Error("job_id: select a job first (click its row)")
        status = handlers.cancel(int(job_id))
        gr.Info(f"Job {int(job_id)}: {'cancel requested' if status == 'running' else status}.")

    outputs = [table, summary, plot, log]
    timer.tick(refresh, selected, outputs, api_visibility="private")
    table.select(on_select, None, selected, api_visibility="private")
    selected.change(refresh, selected, outputs, api_visibility="private")
    cancel.click(on_cancel, selected, None, api_visibility="private")
