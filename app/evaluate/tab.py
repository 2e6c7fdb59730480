"""Evaluate tab: "which adapter is better on my held-out set?". Queue an evaluation of adapters of one base and the
base over an eval set (a training job's held-out rows, a dataset, a prompt suite), then read its results: the table
of adapters x metrics with the best marked, a chart of one metric, the rows where the adapters disagree most, and
downloads (CSV / JSON, every answer as JSONL). A tab of its own: the question is about whole sets and runs as a job,
unlike the Chat tab's one prompt at a time, and a person looking for "which is better" finds it by its name."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from app.web.errors import user_error
from app.web.safe_text import SafeMarkdown, escaped
from jobs.data.store import dataset_names
from jobs.evaluate import results as eval_results
from jobs.evaluate.harness import task_names
from jobs.evaluate.judging import MAX_PROMPT_CHARS
from jobs.evaluate.metrics import HIGHER_IS_BETTER
from jobs.evaluate.spec import SOURCES, EvalSpec
from jobs.evaluate.submit import submit_eval
from jobs.spec_words import SpecError
from jobs.studio import Studio
from storage import catalog, jobs_repo, suites_repo
from storage.models import JobKind

BEST_MARK = "★"
SHOWN_ROWS = 200


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def submit(studio: Studio, spec: str, priority: int = 0) -> int:
    try:
        raw = json.loads(spec) if (spec or "").strip() else {}
    except ValueError as error:
        raise user_error(f"spec: not valid JSON: {error}") from None
    try:
        return submit_eval(studio, raw, priority)
    except SpecError as error:
        raise user_error(error.as_text()) from None


def summary(studio: Studio, job_id: int, rows: int = 50) -> dict:
    try:
        return eval_results.summary(studio, job_id, rows)
    except eval_results.NoResults as error:
        raise user_error(str(error)) from None


def export(studio: Studio, job_id: int, what: str = "table", fmt: str = "csv") -> str:
    try:
        return eval_results.export_text(studio, job_id, what, fmt)
    except (eval_results.NoResults, ValueError) as error:
        raise user_error(str(error)) from None


def eval_jobs(studio: Studio) -> list[tuple[str, int]]:
    """The evaluations the person may see, newest first, as (label, job id)."""
    with studio.db.read() as session:
        return [(f"{job.id}: {job.name} ({job.status})", job.id) for job in jobs_repo.list_jobs(session)
                if job.kind == JobKind.EVAL]


def training_jobs(studio: Studio) -> list[tuple[str, int]]:
    """Training jobs whose held-out rows can be an eval set (they held some out), newest first."""
    with studio.db.read() as session:
        return [(f"{job.id}: {job.name} ({job.status})", job.id) for job in jobs_repo.list_jobs(session)
                if job.kind == JobKind.TRAIN and ((job.spec.get("eval_fraction") or 0) > 0
                                                  or job.spec.get("eval_dataset"))]


def form_spec(adapters, include_base, source, train_job, dataset, suite, max_rows, max_new_tokens, temperature,
              seed, tasks=(), num_fewshot=None, judge=None, judge_prompt=None,
              judge_max_tokens=None) -> dict:
    """The form's fields as an eval spec (what the API's submit_eval takes as JSON); the judging prompt only with a
    judge picked."""
    spec = {"adapters": list(adapters or []), "include_base": bool(include_base), "source": source,
            "max_rows": int(max_rows or 0), "max_new_tokens": int(max_new_tokens or 0),
            "temperature": float(temperature or 0), "seed": int(seed or 0)}
    if judge:
        spec.update(judge=judge, judge_prompt=judge_prompt or "",
                    judge_max_tokens=int(judge_max_tokens or EvalSpec().judge_max_tokens))
    if source == "held_out" and train_job:
        spec["train_job"] = int(train_job)
    if source == "dataset":
        spec["dataset"] = dataset or ""
    if source == "suite":
        spec["suite"] = suite or ""
    if source == "benchmark":
        spec["tasks"] = list(tasks or [])
        if num_fewshot not in (None, ""):
            spec["num_fewshot"] = int(num_fewshot)
    return spec


def summary_text(found: dict) -> str:
    best = eval_results.best_text({"best": found["best"], "directions": found.get("directions", {})})
    settings = found["settings"]
    if found.get("kind") == "reward":  # reward models scored pairs (jobs.evaluate.reward_pairs)
        return (f"**Reward models on {escaped(found['set'])}** (`{escaped(found['base_model'])}`): {found['rows']} of "
                f"{found['rows_in_set']} preference pairs scored; pairwise accuracy is the share where chosen scores "
                f"above rejected, mean margin is chosen minus rejected.\n\n"
                f"**Best** ({BEST_MARK} in the table): {escaped(best) or 'all scored alike'}.")
    if found.get("source") == "benchmark":
        shots = "each task's own few-shot count" if settings["num_fewshot"] is None else \
            f"{settings['num_fewshot']}-shot"
        return (f"**lm-evaluation-harness: {escaped(found['set'])}** on `{escaped(found['base_model'])}`: at most "
                f"{settings['limit']} rows a task, {shots}, seed {settings['seed']}.\n\n"
                f"**Best** ({BEST_MARK} in the table): {escaped(best) or 'all panes scored alike'}.")
    sampling = ("greedy" if not settings["temperature"] else
                f"sampled at temperature {settings['temperature']}, seed {settings['seed']}")
    return (f"**{escaped(found['set'])}** on `{escaped(found['base_model'])}`: {found['rows']} of "
            f"{found['rows_in_set']} rows, answers up to {settings['max_new_tokens']} tokens, {sampling}.\n\n"
            f"**Best** ({BEST_MARK} in the table): {escaped(best) or 'no metric with references'}.\n\n"
            "Rows below are sorted by how much the adapters disagree (the spread of their chrF against the "
            "reference; without one, how unlike their answers are)."
            + (f"\n\n**Judged** by `{escaped(found['judging']['judge'])}`, every pair in both orders (A/B, then "
               "B/A): the totals and each verdict with the judge's reasons are below; a reply without one verdict "
               "line counts as unparsed." if found.get("judging") else ""))


def chart_frame(found: dict, metric: str) -> pd.DataFrame:
    values = [(row["adapter"], row.get(metric)) for row in found["table"]]
    return pd.DataFrame([{"adapter": pane, "value": value} for pane, value in values if value is not None],
                        columns=["adapter", "value"])


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, tab: gr.Tab, app: gr.Blocks) -> None:
    SafeMarkdown("Which adapter is better? Evaluate adapters of one base, and the base itself, on a whole set: the "
                "rows a training job held out, a dataset (import it in the Datasets tab, any format), or a prompt "
                "suite. It runs as a job (the Runs tab shows its progress); every answer is kept.")
    with gr.Row():
        adapters = gr.Dropdown([], multiselect=True, label="Adapters (of one base)", elem_id="eval-adapters",
                               scale=3)
        include_base = gr.Checkbox(True, label="Include the base", elem_id="eval-include-base", scale=1)
    with gr.Row():
        source = gr.Radio(list(SOURCES), value="held_out", label="Eval set", elem_id="eval-source", scale=2,
                          info="held_out: a training job's eval rows; dataset; suite")
        train_job = gr.Dropdown([], label="Training job (held_out)", elem_id="eval-train-job")
        dataset = gr.Dropdown([], label="Dataset", elem_id="eval-dataset", allow_custom_value=True)
        suite = gr.Dropdown([], label="Prompt suite", elem_id="eval-suite", allow_custom_value=True)
    with gr.Row():
        tasks = gr.Dropdown(task_names(studio.settings.lm_eval_tasks), multiselect=True, scale=3,
                            label="Benchmark tasks (lm-evaluation-harness, from the studio's task folder)",
                            elem_id="eval-tasks")
        num_fewshot = gr.Number(None, precision=0, label="Few-shot examples (empty: the task's)", minimum=0,
                                elem_id="eval-num-fewshot", scale=1)
    defaults = EvalSpec()
    with gr.Row():
        max_rows = gr.Number(defaults.max_rows, precision=0, label="Rows at most", elem_id="eval-max-rows")
        max_new_tokens = gr.Number(defaults.max_new_tokens, precision=0, label="Answer tokens at most",
                                   elem_id="eval-max-new-tokens")
        temperature = gr.Number(defaults.temperature, label="Temperature (0: greedy)", elem_id="eval-temperature")
        seed = gr.Number(defaults.seed, precision=0, label="Seed", elem_id="eval-seed")
    with gr.Accordion("Pairwise judging (optional)", open=False):
        judge = gr.Dropdown([], label="Judge (empty: no judging)", elem_id="eval-judge", allow_custom_value=True,
                            info="'base' or one of your adapters (of any base): it judges every pair of answers, "
                                 "in both orders")
        judge_max_tokens = gr.Number(defaults.judge_max_tokens, precision=0, label="Judge's reply tokens at most",
                                     elem_id="eval-judge-max-tokens")
        judge_prompt = gr.Textbox(defaults.judge_prompt, lines=12, max_length=MAX_PROMPT_CHARS,
                                  label="Judging prompt (edit freely; keep {question}, {answer_a}, {answer_b})",
                                  elem_id="eval-judge-prompt")
    submit_button = gr.Button("Evaluate (queue a job)", variant="primary", elem_id="eval-submit")
    status = SafeMarkdown(elem_id="eval-status")

    SafeMarkdown("### Results")
    with gr.Row():
        picked = gr.Dropdown([], label="Evaluation", elem_id="eval-picked", scale=3)
        refresh = gr.Button("Refresh the list", elem_id="eval-refresh", scale=1)
    summary_view = SafeMarkdown(elem_id="eval-summary")
    table = gr.Dataframe(interactive=False, label=f"Adapters x metrics ({BEST_MARK}: best)", elem_id="eval-table")
    with gr.Row():
        metric = gr.Dropdown([name for name, better in HIGHER_IS_BETTER.items()], value="chrf",
                             label="Chart metric", elem_id="eval-metric", scale=1)
        chart = gr.BarPlot(x="adapter", y="value", label="By adapter", elem_id="eval-chart", scale=3)
    rows = gr.Dataframe(interactive=False, wrap=True, label="Rows, most disagreement first", elem_id="eval-rows",
                        elem_classes=["long-text"])
    judged = gr.Dataframe(interactive=False, label="Pairwise judging: per pair (two judgments a row)",
                          elem_id="eval-judging")
    verdicts = gr.Dataframe(interactive=False, wrap=True, label="Each judgment, with the judge's reasons",
                            elem_id="eval-judgments", elem_classes=["long-text"])
    with gr.Row():
        what = gr.Radio(list(eval_results.EXPORTS), value="table", label="Download", elem_id="eval-export-what")
        fmt = gr.Radio(list(eval_results.FORMATS), value="csv", label="As", elem_id="eval-export-format")
        download = gr.DownloadButton("Download", value=None, interactive=False, elem_id="eval-download")

    form = [adapters, include_base, source, train_job, dataset, suite, max_rows, max_new_tokens, temperature, seed,
            tasks, num_fewshot, judge, judge_prompt,
            judge_max_tokens]

    def choices():
        with studio.db.read() as session:
            names = [a.name for a in catalog.list_adapters(session)]
            suites = [s.name for s in suites_repo.list_suites(session)]
        return (gr.update(choices=names), gr.update(choices=training_jobs(studio)),
                gr.update(choices=dataset_names(studio)), gr.update(choices=suites),
                gr.update(choices=eval_jobs(studio)), gr.update(choices=["", "base", *names]))

    def on_submit(*values):
        job_id = submit(studio, json.dumps(form_spec(*values)))
        return (f"Queued evaluation job **{job_id}**; the Runs tab shows its progress. Pick it below once it "
                f"succeeded.", gr.update(choices=eval_jobs(studio), value=job_id))

    def on_pick(job_id, chart_metric):
        if job_id is None:
            return "", None, None, None, gr.update(value=None, interactive=False), gr.update(), None, None
        try:  # a queued or running evaluation (just submitted, say) says where it is, not an error
            found = eval_results.summary(studio, int(job_id), SHOWN_ROWS)
        except eval_results.NoResults as error:
            return (escaped(str(error).removeprefix("job_id: ")), None, None, None,
                    gr.update(value=None, interactive=False), gr.update(), None, None)
        stored = eval_results.eval_results(studio, int(job_id))
        marked = pd.DataFrame(eval_results.table(stored, mark=BEST_MARK))
        file = eval_results.export_file(studio, int(job_id))
        metrics = eval_results.metric_names(stored)
        chart_metric = chart_metric if chart_metric in metrics or not metrics else metrics[0]
        judging = found.get("judging") or {}
        # The judge's replies are model output: Dataframe cells show them as text, like the answers above.
        return (summary_text(found), marked, chart_frame(found, chart_metric), pd.DataFrame(found["per_row"]),
                gr.update(value=str(file), interactive=True), gr.update(choices=metrics, value=chart_metric),
                pd.DataFrame(judging.get("pairs", [])), pd.DataFrame(judging.get("judgments", [])))

    def on_metric(job_id, chart_metric):
        return chart_frame(summary(studio, int(job_id), 0), chart_metric) if job_id is not None else None

    def on_export(job_id, wanted, as_format):
        if job_id is None:
            return gr.update(value=None, interactive=False)
        try:
            file = eval_results.export_file(studio, int(job_id), wanted, as_format)
        except (eval_results.NoResults, ValueError) as error:
            raise user_error(str(error)) from None
        return gr.update(value=str(file), interactive=True)

    private = dict(api_visibility="private")
    for trigger in (tab.select, app.load):
        trigger(choices, None, [adapters, train_job, dataset, suite, picked, judge], **private)
    refresh.click(lambda: gr.update(choices=eval_jobs(studio)), None, picked, **private)
    submit_button.click(on_submit, form, [status, picked], **private)
    picked.change(on_pick, [picked, metric], [summary_view, table, chart, rows, download, metric, judged, verdicts],
                  **private)
    metric.change(on_metric, [picked, metric], chart, **private)
    for control in (what, fmt):
        control.change(on_export, [picked, what, fmt], download, **private)
