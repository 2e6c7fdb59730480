"""Runs tab: the job table (filtered by status, name, base model, sweep), the queue's controls and the workers, the
selected run (app/runs/run_view.py) with its curves, timeline, sample answers and log, clone-and-edit, and the
comparison of several runs (app/runs/compare_panel.py). Reads the database only, so a browser refresh or an app
restart shows the same truth; the selected run is kept in the page address (?job=N)."""

from __future__ import annotations

import gradio as gr

from app import views
from app.runs import compare_panel, run_view, search_panel
from app.train.spec_form import SpecForm, form_values
from app.web.errors import user_error
from app.web.safe_text import SafeMarkdown, notify
from jobs.spec import priority_problem
from jobs.spec_store import load_stored_spec
from jobs.studio import Studio
from jobs.submit import cancel_job
from jobs.sweeps import cancel_sweep
from storage import jobs_repo, users_repo, workers_repo
from storage.models import JobStatus

REFRESH_S = 2.0
ORDER_LOCKED = "where: only an admin reorders the shared queue; your jobs run in the order you submitted them"
ALL = "all"

# --- handlers (the API calls these too) ---------------------------------------------------------------------
def job_details(studio: Studio, job_id: int) -> dict:
    """One job: status, progress, ETA, timing, latest metrics, median throughput, error, adapter, queue place,
    log tail, spec."""
    details = run_view.details_or_none(studio, run_view.checked_id(job_id))
    if details is None:
        raise user_error(f"job_id: no job with id {job_id}")
    return details


def job_list(studio: Studio) -> list[dict]:
    with studio.db.read() as session:
        return [views.job_summary(job, run_view.job_pace(session, job)) for job in jobs_repo.list_jobs(session)]


def cancel(studio: Studio, job_id: int) -> str:
    try:
        return cancel_job(studio, run_view.checked_id(job_id))
    except LookupError:
        raise user_error(f"job_id: no job with id {job_id}") from None


def cancel_group(studio: Studio, group: str) -> dict[int, str]:
    """Cancel every queued or running job of a sweep; returns each one's status."""
    if not group:
        raise user_error("sweep: name the sweep to cancel")
    try:
        return cancel_sweep(studio, group)
    except LookupError as error:
        raise user_error(f"sweep: {error}") from None


def move(studio: Studio, job_id: int, where: str) -> list[int]:
    """Move a queued job (front, up, down, back); returns the queue's new order (job ids, first runs first)."""
    if where not in jobs_repo.MOVES:
        raise user_error(f"where: one of {', '.join(jobs_repo.MOVES)}, not '{where}'")
    if users_repo.queue_order_locked():
        raise user_error(ORDER_LOCKED)
    try:
        with studio.db.write() as session:
            return jobs_repo.move_job(session, run_view.checked_id(job_id), where)
    except LookupError:
        raise user_error(f"job_id: job {job_id} is not queued") from None


def reprioritize(studio: Studio, job_id: int, priority: int) -> list[int]:
    """Change a queued job's priority; returns the queue's new order."""
    if problem := priority_problem(priority):
        raise user_error(f"priority: {problem}")
    if users_repo.queue_order_locked():
        raise user_error(ORDER_LOCKED)
    try:
        with studio.db.write() as session:
            jobs_repo.set_priority(session, run_view.checked_id(job_id), priority)
            return jobs_repo.queued_job_ids(session)
    except LookupError:
        raise user_error(f"job_id: job {job_id} is not queued") from None


def worker_list(studio: Studio) -> list[dict]:
    """Live workers: host, device, memory, what each runs (a node of another worker's multi-host job says whose and
    which node), last heartbeat."""
    with studio.db.read() as session:
        workers = workers_repo.live_workers(session, studio.settings.lease_s)
        running = {w.current_job_id for w in workers if w.current_job_id is not None}
        jobs = {job_id: job for job_id in running if (job := jobs_repo.get_job(session, job_id)) is not None}
    summaries = [views.worker_summary(worker) for worker in workers]
    for summary in summaries:
        job = jobs.get(summary["current_job_id"])
        if summary["current_job_id"] is not None and job is None:  # someone else's job: said, not named
            summary["current_job_id"], summary["busy"] = None, True
        elif job is not None and job.worker and job.worker != summary["name"]:
            summary["node_of"] = views.gang_node_text(job, summary["name"])
    return summaries


def jobs_frame(studio: Studio, statuses=None, name: str = "", base: str = ALL, group: str = ALL):
    """The job table, filtered: statuses (none picked: all), a name fragment, one base model, one sweep."""
    with studio.db.read() as session:
        jobs = [job for job in jobs_repo.list_jobs(session)
                if (not statuses or job.status in statuses) and (name or "").lower() in job.name.lower()
                and base in (ALL, None, job.spec.get("base_model")) and group in (ALL, None, job.group_name)]
        latest = jobs_repo.latest_metrics(session, [job.id for job in jobs], ("loss", "eval_loss"))
        paces = {job.id: run_view.job_pace(session, job) for job in jobs if job.status == JobStatus.RUNNING}
    return views.jobs_table(jobs, latest, paces)


def cancellable(studio: Studio, picked) -> tuple[bool, bool]:
    """(the picked job, its sweep) has something left to cancel: queued or running. The empty pick follows the
    newest job, as the summary does."""
    job_id = run_view.parse_job_id(picked) if str(picked or "").strip() else run_view.newest_job_id(studio)
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id) if job_id is not None else None
        if job is None:
            return False, False
        sweep_active = bool(job.group_name) and any(
            other.group_name == job.group_name for other in jobs_repo.active_jobs(session, mine=True))
    return job.status in (JobStatus.QUEUED, JobStatus.RUNNING), sweep_active


def _cancel_button(live: bool):
    # Red only while there is something to stop: a red button on a finished job reads as an alarm, or as a
    # delete. Disabled, not hidden, so the row keeps its shape as the job finishes.
    return gr.update(variant="stop" if live else "secondary", interactive=live)


def filter_choices(studio: Studio) -> tuple[list[str], list[str]]:
    """(base models, sweeps) that jobs have, for the filters."""
    with studio.db.read() as session:
        jobs = jobs_repo.list_jobs(session)
    bases = sorted({job.spec.get("base_model", "") for job in jobs} - {""})
    groups = sorted({job.group_name for job in jobs if job.group_name})
    return [ALL, *bases], [ALL, *groups]


def queued_count(studio: Studio) -> int:
    with studio.db.read() as session:
        return len(jobs_repo.queued_job_ids(session))


def clone_values(studio: Studio, picked, names: list[str]) -> list:
    """The Train form's values from a run's spec (its adapter name cleared, so the clone gets its own), migrated
    from the version it was stored under. A spec today's rules refuse is still cloned, with a warning naming its
    problems: the form then outlines them at submit, and the person fixes them there."""
    job_id = run_view.parse_job_id(picked)
    if job_id is None:
        raise user_error("job_id: select a run to clone (click its row)")
    with studio.db.read() as session:
        job = jobs_repo.get_job(session, job_id)
    if job is None or job.kind != "train":
        raise user_error(f"job_id: no training run with id {job_id}")
    stored = load_stored_spec(job.spec)
    if stored.problems:
        notify(f"{stored.problems_text()} Fix these fields in the form before submitting.", warning=True)
    return form_values({**stored.fields, "name": ""}, names)


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, app: gr.Blocks, form: SpecForm, tabs: gr.Tabs) -> None:
    with gr.Row():
        statuses = gr.Dropdown(list(JobStatus.ALL), multiselect=True, label="Status", scale=2,
                               elem_id="filter-status")
        name_filter = gr.Textbox(label="Name contains", scale=2, elem_id="filter-name")
        base_filter = gr.Dropdown([ALL], value=ALL, label="Base model", scale=2, elem_id="filter-base")
        group_filter = gr.Dropdown([ALL], value=ALL, label="Sweep", scale=2, elem_id="filter-sweep")
    table = gr.Dataframe(interactive=False, label="Jobs (click a row to follow it)", elem_id="jobs-table")
    filters = [statuses, name_filter, base_filter, group_filter]
    with gr.Row():
        selected = gr.Textbox(label="Job id", placeholder="click a row; empty follows the newest job",
                              elem_id="selected-job", scale=2)
        cancel_button = gr.Button("Cancel job", variant="secondary", interactive=False, scale=1)
        clone_button = gr.Button("Clone into the Train form", scale=1, elem_id="clone-run")
        cancel_sweep_button = gr.Button("Cancel its whole sweep", variant="secondary", interactive=False, scale=1)
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
            summary = SafeMarkdown(elem_id="job-summary", folds=True)  # default fields fold away
        with gr.Column(scale=3):
            plot = gr.LinePlot(x="step", y="value", color="series", title="Loss", height=300, elem_id="loss-plot")
    with gr.Accordion("Timeline and sample answers", open=False):
        show = gr.Radio(list(views.TIMELINES), value="tokens/s", label="Timeline")
        timeline = gr.Plot(show_label=False, elem_id="run-timeline")
        answers = gr.Dataframe(interactive=False, wrap=True, label="Sample answers, step by step",
                               elem_id="run-samples", elem_classes=["long-text"])
    log = gr.Textbox(label="Log (the end, followed while the job runs)", lines=12, max_lines=12,
                     elem_id="log-tail")
    log_download = gr.DownloadButton("Download the whole log", value=None, elem_id="log-download", size="sm")
    compare_panel.build(studio, app)
    search_panel.build(studio)
    timer = gr.Timer(REFRESH_S)

    def table_now(*filter_values):
        return jobs_frame(studio, *filter_values)

    def refresh(picked, *filter_values):
        job_live, sweep_live = cancellable(studio, picked)
        return (table_now(*filter_values), *run_view.details(studio, picked), _cancel_button(job_live),
                _cancel_button(sweep_live))

    def on_select(event: gr.SelectData):
        return str(event.row_value[0])

    def picked_id(picked, what: str) -> int:
        job_id = run_view.parse_job_id(picked)
        if job_id is None:
            raise user_error(f"job_id: select {what} first (click its row)")
        return job_id

    def on_cancel(picked):
        job_id = picked_id(picked, "a job")
        status = cancel(studio, job_id)
        notify(f"Job {job_id}: {'cancel requested' if status == 'running' else status}.")

    def on_cancel_sweep(picked):
        job = job_details(studio, picked_id(picked, "a job of the sweep"))
        done = cancel_group(studio, job.get("group_name") or "")
        notify(f"Sweep {job.get('group_name')}: {len(done)} job(s) cancelled or asked to stop.")

    def on_move(picked, where, *filter_values):
        job_id = picked_id(picked, "a queued job")
        order = move(studio, job_id, where)
        notify(f"Job {job_id} is now {order.index(job_id) + 1} of {len(order)} in the queue.")
        return table_now(*filter_values)

    def on_priority(picked, priority, *filter_values):
        job_id = picked_id(picked, "a queued job")
        order = reprioritize(studio, job_id, int(priority or 0))
        notify(f"Job {job_id}: priority {int(priority or 0)}, now {order.index(job_id) + 1} of {len(order)}.")
        return table_now(*filter_values)

    def on_clone(picked):
        return gr.Tabs(selected="train"), *clone_values(studio, picked, form.names)

    def from_address(request: gr.Request):
        wanted = (request.query_params.get("job") or "") if request else ""
        job_id = run_view.parse_job_id(wanted)
        bases, groups = filter_choices(studio)
        # A shared link to a run opens on that run; a plain visit stays on the first tab.
        opened = gr.Tabs(selected="runs") if job_id else gr.update()
        return opened, str(job_id or ""), gr.update(choices=bases), gr.update(choices=groups)

    def extras(picked, what):
        job_id = run_view.parse_job_id(picked) if str(picked or "").strip() else run_view.newest_job_id(studio)
        return run_view.timeline(studio, job_id, what), run_view.samples(studio, job_id)

    private = dict(api_visibility="private")
    quiet = dict(private, show_progress="hidden")  # no "processing" flicker every refresh
    outputs = [table, summary, plot, log, log_download, cancel_button, cancel_sweep_button]
    for where, button in move_buttons.items():
        button.click(lambda picked, *f, w=where: on_move(picked, w, *f), [selected, *filters], table, **private)
    priority_button.click(on_priority, [selected, new_priority, *filters], table, **private)
    timer.tick(refresh, [selected, *filters], outputs, **quiet)
    timer.tick(lambda: views.workers_table(worker_list(studio), queued_count(studio)), None, workers, **quiet)
    app.load(from_address, None, [tabs, selected, base_filter, group_filter], **quiet)
    table.select(on_select, None, selected, **quiet)
    selected.change(refresh, [selected, *filters], outputs, **quiet)
    for control in filters:
        control.change(table_now, filters, table, **quiet)
    for trigger in (selected.change, show.change):
        trigger(extras, [selected, show], [timeline, answers], **quiet)
    cancel_button.click(on_cancel, selected, None, **private)
    cancel_sweep_button.click(on_cancel_sweep, selected, None, **private)
    form.show_fields(clone_button.click(on_clone, selected, [tabs, *form.controls], **private))
