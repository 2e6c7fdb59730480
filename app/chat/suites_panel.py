"""Prompt suites in the Chat tab: write or pick a suite, run it on the panes picked above (adapters, checkpoints,
the base) with the shared generation settings, read the grid (prompt × pane, with each pane's mean log-likelihood
of the reference answers), and diff two panes' answers. The chat tab's upkeep thread runs each suite on every new
adapter of a base the suite was run on."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app.web.errors import user_error
from app.web.safe_text import SafeMarkdown, clean_html
from jobs.chat.request import ChatRequestError, GenerationSettings, base_problem, resolve_panes
from jobs.chat.suites import (
    Grid,
    diff_html,
    parse_suite_text,
    run_suite,
    save_suite,
    suite_grid,
)
from jobs.spec import DEMO_BASE_MODEL
from jobs.studio import Studio
from storage import suites_repo

SHOWN_CHARS = 160


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def suite_names(studio: Studio) -> list[str]:
    with studio.db.read() as session:
        return [s.name for s in suites_repo.list_suites(session)]


def suite_text(studio: Studio, name: str) -> str:
    with studio.db.read() as session:
        suite = suites_repo.get_suite(session, name or "")
    if suite is None:
        return ""
    return "\n".join(p["prompt"] + (f" => {p['reference']}" if p["reference"] else "") for p in suite.prompts)


def save(studio: Studio, name: str, text: str) -> str:
    try:
        suite = save_suite(studio, name, parse_suite_text(text))
    except ChatRequestError as error:
        raise user_error(str(error)) from None
    return f"Saved suite **{suite.name}** ({len(suite.prompts)} prompts)."


def run(studio: Studio, chat, name: str, base_model: str, names: list[str], settings: GenerationSettings) -> int:
    """Run the suite on the panes; returns the number of (prompt, pane) cells stored."""
    base_model = base_model or DEMO_BASE_MODEL
    try:
        panes = resolve_panes(studio, base_model, list(names or []))
        problems = settings.problems() + [p for p in [base_problem(studio, base_model)] if p]
        if problems:
            raise ChatRequestError(problems)
        return run_suite(studio, chat.scheduler(), name, base_model, panes, settings)
    except ChatRequestError as error:
        raise user_error(str(error)) from None


def results(studio: Studio, name: str, base_model: str) -> Grid:
    try:
        return suite_grid(studio, name, base_model or DEMO_BASE_MODEL)
    except ChatRequestError as error:
        raise user_error(str(error)) from None


def grid_frame(grid: Grid) -> pd.DataFrame:
    """A row per prompt, a column per pane (answers cut for the table), and a last row of mean log-likelihoods."""
    rows = [[f"{i + 1}. {item['prompt']}", *[_cut(grid.replies.get((i, pane), "")) for pane in grid.panes]]
            for i, item in enumerate(grid.prompts)]
    scores = [grid.mean_loglik(pane) for pane in grid.panes]
    if any(score is not None for score in scores):
        rows.append(["mean log-likelihood of the references (higher: closer)",
                     *["" if score is None else f"{score:.3f}" for score in scores]])
    return pd.DataFrame(rows, columns=["prompt", *grid.panes])


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, chat, base_model: gr.Dropdown, picked: gr.Dropdown, settings: list) -> gr.Dropdown:
    """`settings`: the chat tab's generation controls (max new tokens, temperature, top-p, seed). Returns the suite
    picker, whose choices (the person's own suites) the chat tab refreshes when the page loads."""
    with gr.Accordion("Prompt suites: the same prompts for every adapter, kept as a grid", open=False):
        with gr.Row():
            suite = gr.Dropdown(suite_names(studio), label="Suite", allow_custom_value=True, scale=2,
                                elem_id="suite-name")
            save_button = gr.Button("Save suite", scale=1)
            run_button = gr.Button("Run on the panes picked above", variant="primary", scale=1, elem_id="suite-run")
        prompts = gr.Textbox(label="Prompts: one per line, 'prompt => reference answer' where there is one",
                             lines=5, elem_id="suite-prompts")
        status = SafeMarkdown(elem_id="suite-status")
        grid = gr.Dataframe(interactive=False, wrap=True, elem_id="suite-grid", elem_classes=["long-text"])
        with gr.Row():
            before = gr.Dropdown([], label="Diff: before", scale=1)
            after = gr.Dropdown([], label="after", scale=1)
            diff_button = gr.Button("Diff answers", scale=1)
        diff = gr.HTML(elem_id="suite-diff")

    def show(name, base):
        if not name or name not in suite_names(studio):
            return gr.update(), gr.update(), gr.update(), gr.update()
        shown = results(studio, name, base)
        panes = gr.update(choices=shown.panes)
        return suite_text(studio, name), grid_frame(shown), panes, panes

    def on_save(name, text, base):
        message = save(studio, name, text)
        return message, gr.update(choices=suite_names(studio), value=(name or "").strip()), *show(name, base)[1:]

    def on_run(name, base, names, *values):
        cells = run(studio, chat, name, base, names, GenerationSettings.from_controls(*values))
        return f"Ran **{name}**: {cells} answers stored.", *show(name, base)[1:]

    private = dict(api_visibility="private")
    shown_outputs = [grid, before, after]
    suite.change(show, [suite, base_model], [prompts, *shown_outputs], **private)
    save_button.click(on_save, [suite, prompts, base_model], [status, suite, *shown_outputs], **private)
    run_button.click(on_run, [suite, base_model, picked, *settings], [status, *shown_outputs], **private)
    diff_button.click(lambda name, base, a, b: clean_html(diff_html(results(studio, name, base), a, b)),
                      [suite, base_model, before, after], diff, **private)
    return suite


def fresh_suite_choices(studio: Studio, current: str | None):
    return gr.update(choices=suite_names(studio), value=current)
