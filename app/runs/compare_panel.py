"""Compare runs: pick several runs (or a whole sweep) and see their curves overlaid (by step or by tokens seen), their
specs side by side (differences only, when asked) and their final metrics ranked by eval loss."""

from __future__ import annotations

import gradio as gr

from app import views
from app.runs import charts
from app.web.errors import user_error
from jobs.spec_store import load_stored_spec
from jobs.studio import Studio
from storage import jobs_repo
from storage.models import JobKind

RANKED_METRICS = ("loss", "eval_loss", "peak_memory_bytes")
MAX_RUNS = 12
X_AXES = {"step": "step", "tokens seen": "tokens_seen"}


def run_choices(studio: Studio) -> list[str]:
    with studio.db.read() as session:
        return [f"{job.id} · {job.name}" for job in jobs_repo.list_jobs(session)]


def group_choices(studio: Studio) -> list[str]:
    with studio.db.read() as session:
        return sorted({job.group_name for job in jobs_repo.list_jobs(session) if job.group_name})


def group_runs(studio: Studio, group: str) -> list[str]:
    with studio.db.read() as session:
        return [f"{job.id} · {job.name}" for job in jobs_repo.list_jobs(session) if job.group_name == group]


def _ids(picked: list[str]) -> list[int]:
    ids = []
    for label in picked or []:
        head = str(label).split("·")[0].strip()
        if head.isdigit():
            ids.append(int(head))
    return ids


def compare(studio: Studio, job_ids: list[int], timeline: str, x_axis: str, differences_only: bool):
    """(figure, spec table, ranking) for the chosen runs."""
    if not job_ids:
        raise user_error("runs: pick at least one run (or a sweep)")
    if len(job_ids) > MAX_RUNS:
        raise user_error(f"runs: at most {MAX_RUNS} at once")
    with studio.db.read() as session:
        jobs = [job for job in (jobs_repo.get_job(session, job_id) for job_id in job_ids) if job is not None]
        metrics = {job.id: jobs_repo.metrics_for(session, job.id) for job in jobs}
        latest = jobs_repo.latest_metrics(session, [job.id for job in jobs], RANKED_METRICS)
        medians = {job.id: views.median_or_none(jobs_repo.metric_values(session, job.id, "tokens_per_s"))
                   for job in jobs}
    names = views.TIMELINES[timeline]
    curves = {f"{job.id} · {job.name}": views.run_curves(metrics[job.id], names, X_AXES[x_axis]) for job in jobs}
    figure = charts.overlay(curves, x_axis, timeline)
    specs = {f"{job.id} · {job.name}": _comparable(job) for job in jobs}
    return figure, views.spec_diff(specs, differences_only), views.ranking(jobs, latest, medians)


def _comparable(job) -> dict:
    # Specs stored under different versions are compared under today's (a merge job's spec is not a TrainSpec).
    return load_stored_spec(job.spec).fields if job.kind == JobKind.TRAIN else job.spec


def build(studio: Studio, app: gr.Blocks) -> None:
    with gr.Accordion("Compare runs", open=False, elem_id="compare-runs") as panel:
        with gr.Row():
            picked = gr.Dropdown(choices=[], multiselect=True, label="Runs", scale=3, elem_id="compare-picked")
            sweep = gr.Dropdown(choices=[], label="…or a whole sweep", scale=1, elem_id="compare-sweep")
        with gr.Row():
            timeline = gr.Radio(list(views.TIMELINES), value="loss curves", label="Show")
            x_axis = gr.Radio(list(X_AXES), value="step", label="x axis")
            differences_only = gr.Checkbox(True, label="Spec: differences only", elem_id="compare-diff-only")
            go = gr.Button("Compare", variant="primary", elem_id="compare-go")
        plot = gr.Plot(elem_id="compare-plot", show_label=False)
        ranking = gr.Dataframe(interactive=False, label="Ranked by final eval loss", elem_id="compare-ranking")
        specs = gr.Dataframe(interactive=False, label="Specs side by side", wrap=True, elem_id="compare-specs")

    def fresh_choices(current):
        choices = run_choices(studio)
        return (gr.update(choices=choices, value=[c for c in current or [] if c in choices]),
                gr.update(choices=group_choices(studio)))

    def fresh_sweeps():
        # Only the sweep list: rewriting the picked runs here could land after on_sweep and empty them again.
        return gr.update(choices=group_choices(studio))

    def on_sweep(group):
        return gr.update(value=group_runs(studio, group)) if group else gr.update()

    def on_compare(runs, group, show, x, only_differences):
        # A sweep picked a moment before the click may not have filled the runs box yet: its runs stand in.
        chosen = runs or (group_runs(studio, group) if group else [])
        return compare(studio, _ids(chosen), show, x, only_differences)

    private = dict(api_visibility="private")
    for trigger in (panel.expand, picked.focus, app.load):  # runs and sweeps come while the page is open
        trigger(fresh_choices, picked, [picked, sweep], **private)
    sweep.focus(fresh_sweeps, None, sweep, **private)
    sweep.change(on_sweep, sweep, picked, **private)
    inputs, outputs = [picked, sweep, timeline, x_axis, differences_only], [plot, specs, ranking]
    go.click(on_compare, inputs, outputs, **private)
    for control in (timeline, x_axis, differences_only):
        control.change(lambda *values: on_compare(*values) if values[0] or values[1] else (gr.update(),) * 3,
                       inputs, outputs, **private)
