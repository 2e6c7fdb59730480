"""Budgeted search in the page: started from the Train form (its values are the base), followed in the Runs tab: the
trials (best marked), their held-out loss curves overlaid, the parameters' importance, the best spec and "Train this".
Handlers here are what the API calls too."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from app.runs.charts import overlay
from app.web.errors import user_error
from app.web.safe_text import SafeMarkdown, notify
from jobs.search import driver
from jobs.spec import SpecError
from jobs.studio import Studio
from jobs.sweeps import axes_from_text

SPACE_EXAMPLE = """\
# Ranges ({low, high}, "log: true" for rates) or choices, over any spec fields.
learning_rate: {low: 0.0001, high: 0.01, log: true}
lora_r: {low: 4, high: 64, log: true}
target_modules: {choices: [attention, all-linear]}
"""
TRIAL_COLUMNS = ["trial", "job", "status", "held-out loss", "steps", "seconds", "values", "values from", "best"]
ORIGIN_WORDS = {"plan": "the studio's plan", "first": "given to try first", None: "the sampler"}


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def start(studio: Studio, base: dict, space: object, budget_trials: int, budget_minutes: float | None = None,
          parallel: int = 1, pruner: str = "hyperband", name: str = "", start_from_plan: bool = True) -> str:
    """Start a search over `space` from `base`; returns its name. Raises SpecError naming every problem."""
    if isinstance(space, str):
        space = axes_from_text(space)
    raw = {"name": name, "base": base, "space": space, "budget_trials": budget_trials, "parallel": parallel,
           "pruner": pruner, "start_from_plan": start_from_plan}
    if budget_minutes:
        raw["budget_minutes"] = budget_minutes
    return driver.start_search(studio, raw)


def result(studio: Studio, name: str) -> dict:
    try:
        return driver.search_result(studio, (name or "").strip())
    except LookupError as error:
        raise user_error(f"name: {error}") from None


def train_best(studio: Studio, name: str) -> int:
    try:
        return driver.train_best(studio, (name or "").strip())
    except LookupError as error:
        raise user_error(f"name: {error}") from None
    except SpecError as error:
        raise user_error(error.as_text()) from None


def cancel(studio: Studio, name: str) -> str:
    try:
        driver.cancel_search(studio, (name or "").strip())
    except LookupError as error:
        raise user_error(f"name: {error}") from None
    return driver.CANCELLED


def names(studio: Studio) -> list[str]:
    return [search["name"] for search in driver.list_searches(studio)]


# --- views --------------------------------------------------------------------------------------------------
def trials_table(found: dict) -> pd.DataFrame:
    best = (found.get("best") or {}).get("number")
    rows = [[t["number"], t["job_id"], t["job_status"] or t["state"],
             None if t["value"] is None else round(t["value"], 4), t["steps"], t["seconds"],
             json.dumps(t["params"]), ORIGIN_WORDS.get(t.get("origin"), ""), "★ best" if t["number"] == best else ""]
            for t in found["trials"]]
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def trial_curves(found: dict) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Every trial's held-out loss by step, as `charts.overlay` draws them (a trial pruned at its first evaluation
    has one point: drawn as a marker, which a line chart would leave out)."""
    trial_of = {str(t["job_id"]): t["number"] for t in found["trials"] if t["job_id"] is not None}
    return {f"trial {trial_of[job_id]}": {"held-out loss": [(float(x), float(y)) for x, y in curve]}
            for job_id, curve in found["curves"].items() if job_id in trial_of and curve}


def importance_frame(found: dict) -> pd.DataFrame:
    return pd.DataFrame(sorted(found["importance"].items(), key=lambda kv: -kv[1]),
                        columns=["parameter", "importance"])


def summary_text(found: dict) -> str:
    request, compute = found["request"], found["compute"]
    budget = f"{request['budget_trials']} trials" + (f" or {request['budget_minutes']:g} minutes"
                                                     if request.get("budget_minutes") else "")
    best = found.get("best")
    lines = [f"**{found['name']}**: {found['state']}; budget {budget}; {compute['trials']} trials so far, "
             f"{compute['steps']} steps, {compute['seconds']:.0f} s of worker time.",
             f"Best: trial {best['number']} (job {best['job_id']}), held-out loss {best['value']:.4f}."
             if best else "No trial has finished yet."]
    if found["importance_note"]:
        lines.append(found["importance_note"])
    return "\n\n".join(lines)


# --- layout -------------------------------------------------------------------------------------------------
def build_start(studio: Studio, names_: list[str], controls: list, spec_from_form, summary, status) -> None:
    """The Train tab's accordion: search over the form's values as the base."""
    with gr.Accordion("Search: the best values within a budget (Optuna, losers stopped early)", open=False):
        space = gr.Code(value=SPACE_EXAMPLE, language="yaml", label="Search space (YAML or JSON)",
                        elem_id="search-space")
        with gr.Row():
            trials = gr.Number(value=8, precision=0, label="Budget: trials", minimum=1, elem_id="search-trials")
            minutes = gr.Number(value=0, label="Budget: minutes (0: none)", minimum=0, elem_id="search-minutes")
            parallel = gr.Number(value=1, precision=0, label="Trials at once", minimum=1, elem_id="search-parallel")
            pruner = gr.Radio(["hyperband", "successive_halving"], value="hyperband", label="Pruner")
            search_name = gr.Textbox(label="Search name", placeholder="optional", elem_id="search-name")
        from_plan = gr.Checkbox(value=True, label="First trial: the form's own values (the plan's), clamped into "
                                                  "the space", elem_id="search-from-plan")
        start_button = gr.Button("Start search", elem_id="search-start")

    def on_start(space_text, trials_value, minutes_value, parallel_value, pruner_value, name_value, from_plan_value,
                 *values):
        try:
            name = start(studio, spec_from_form(studio, names_, list(values)), space_text, int(trials_value or 0),
                         float(minutes_value or 0) or None, int(parallel_value or 1), pruner_value, name_value,
                         bool(from_plan_value))
        except SpecError as error:
            problems = "\n".join(f"- {p.field}: {p.message}" for p in error.problems)
            return f"**Search not started: {len(error.problems)} problem(s) to fix.**\n\n{problems}", ""
        return "", f"Started search **{name}**: follow its trials in the Runs tab (Searches)."

    start_button.click(on_start, [space, trials, minutes, parallel, pruner, search_name, from_plan, *controls],
                       [summary, status], api_visibility="private")


def build(studio: Studio) -> None:
    """The Runs tab's accordion: one search's trials, curves, importance and best spec."""
    with gr.Accordion("Searches", open=False):
        with gr.Row():
            picked = gr.Dropdown([], label="Search", allow_custom_value=True, scale=3, elem_id="search-picked")
            show = gr.Button("Show", scale=1, elem_id="search-show")
            train_button = gr.Button("Train this (the best spec)", scale=1, elem_id="search-train-best")
            cancel_button = gr.Button("Cancel search", scale=1, elem_id="search-cancel")
        summary = SafeMarkdown(elem_id="search-summary")
        table = gr.Dataframe(interactive=False, label="Trials", elem_id="search-trials-table")
        with gr.Row():
            curves = gr.Plot(label="Held-out loss by trial", elem_id="search-curves", scale=3)
            importance = gr.BarPlot(x="parameter", y="importance", title="Parameter importance (PED-ANOVA)",
                                    height=300, elem_id="search-importance", scale=2)
        best_spec = gr.Code(language="json", label="Best spec", interactive=False, elem_id="search-best-spec")

    def on_show(name):
        found = result(studio, name)
        spec = json.dumps(found["best_spec"], indent=2) if found["best_spec"] else ""
        chart = overlay(trial_curves(found), "step", "Held-out loss by trial") if found["curves"] else None
        return (summary_text(found), trials_table(found), chart, importance_frame(found), spec)

    def on_train(name):
        job_id = train_best(studio, name)
        notify(f"Queued job {job_id} with the best spec of search {name}.")

    def on_cancel(name):
        cancel(studio, name)
        notify(f"Search {name}: cancelled; its queued and running trials are stopping.")

    def on_open():
        return gr.update(choices=names(studio))

    private = dict(api_visibility="private")
    show.click(on_show, picked, [summary, table, curves, importance, best_spec], **private)
    picked.change(on_show, picked, [summary, table, curves, importance, best_spec], **private)
    train_button.click(on_train, picked, None, **private)
    cancel_button.click(on_cancel, picked, None, **private)
    picked.focus(on_open, None, picked, **dict(private, show_progress="hidden"))
