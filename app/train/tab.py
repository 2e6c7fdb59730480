"""Train tab: the training form (app/train/spec_form.py), dataset upload, an on-request preview, presets and code,
Submit.

A refused submit outlines each wrong field with its message in place of the help, and lists every problem in a
summary at the top of the form."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from app.runs import search_panel
from app.train import memory_panel, plan_panel, presets_panel
from app.train.base_picker import base_choices
from app.train.spec_form import (
    NO_ADAPTER,
    SpecForm,
    build_groups,
    component,
    eval_choices,
    eval_fraction_value,
    field_updates,
    form_layout,
    problems_summary,
    spec_from_form,
    target_choices,
)
from app.web.safe_text import SafeMarkdown
from jobs.data.errors import DatasetError
from jobs.data.formats import Mapping
from jobs.data.mixing import taken_words
from jobs.data.readers import SUFFIXES, parse_json_text
from jobs.data.store import Imported, dataset_names, import_dataset
from jobs.models.resolve import base_module_kinds
from jobs.spec import (
    ADAPTER_FIELDS,
    DEMO_BASE_MODEL,
    EMPTY_SPEC,
    EXAMPLE_DATASET,
    HEAD,
    SMOLLM2_BASE_MODEL,
    SpecError,
    field_default,
    field_problem,
    parse_spec,
)
from jobs.studio import Studio
from jobs.submit import adapter_choices, submit_job
from jobs.sweeps import axes_from_text, submit_sweep

PREVIEW_ROWS = 3
SWEEP_EXAMPLE = "lora_r: [8, 16]\nlearning_rate: [0.005, 0.002]\n"
STATUS_REFRESH_S = 3.0


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def submit_spec(studio: Studio, spec: dict | str, priority: int = 0) -> int:
    """Queue a job from a spec dict or its JSON text. Raises SpecError (every problem, each naming its field)."""
    if isinstance(spec, str):
        try:
            spec = parse_json_text(spec) if spec.strip() else {}
        except ValueError as error:
            raise SpecError.from_text("spec", f"not valid JSON: {error}") from None
    if spec == {}:
        raise SpecError.from_text("spec", EMPTY_SPEC)
    return submit_job(studio, spec, priority=priority)


def import_upload(studio: Studio, upload_path: str | None, name: str, mapping: Mapping | None = None) -> Imported:
    """Import an uploaded file as a dataset (read as `mapping` says, or as proposed). Raises DatasetError."""
    if not upload_path:
        raise DatasetError(["file: choose a JSONL, JSON, CSV or Parquet file to upload"])
    return import_dataset(studio, Path(upload_path), name or "", mapping)


PREVIEW_DATA_FIELDS = ("dataset_mix", "max_rows", "seed", "system_prompt", "chat_template", "assistant_only_loss")
"""The form's fields that decide which rows a run takes and how they render: the preview follows them."""


def render_preview(studio: Studio, base_model: str, dataset: str, eval_fraction, max_length=None, eval_dataset="",
                   overlong="truncate", dedup=False, *data_values) -> str:
    """How many rows, how they split, what max_length and dedup do to them, and the first rows as the model will
    see them: the rows the run takes (a mix's seeded sample, the default system prompt) through its chat template.
    `data_values`: the form's PREVIEW_DATA_FIELDS, in that order."""
    from jobs.data.preview import run_preview
    from jobs.data.store import find_dataset

    found = find_dataset(studio, dataset) if dataset else None
    if found is None:
        return f"No dataset named '{dataset}'."
    raw = spec_from_form(studio, ["dataset", *PREVIEW_DATA_FIELDS[:len(data_values)]], [dataset, *data_values])
    try:
        spec = parse_spec({**raw, "base_model": base_model or field_default("base_model")})
    except SpecError as error:
        return "The rows cannot be shown yet: " + "; ".join(f"{p.field}: {p.message}" for p in error.problems)
    try:
        shown = run_preview(studio, spec, PREVIEW_ROWS)
    except Exception as error:  # a chosen template that cannot render these rows (an unsupported role, say)
        return f"The rows cannot be rendered with chat_template '{spec.chat_template[:40]}': {error}"
    if shown is None:
        return "A dataset of the mix is not stored (dataset_mix names one that is not)."
    lines = [_split_text(studio, found, eval_fraction, eval_dataset, shown.rows if shown.taken else None)]
    if shown.taken:
        lines.insert(0, f"Mixed with seed {spec.seed}: {taken_words(shown.taken)}.")
    if cuts := _cut_text(studio, base_model, dataset, int(max_length or field_default("max_length")), overlong, dedup):
        lines.append(cuts + (" (counted on the dataset field's rows)" if shown.taken else ""))
    if shown.template_note:
        lines.append(shown.template_note + ".")
    lines.append(f"The first {len(shown.texts)}, as the model sees them:")
    rows = [f"**Row {index}**\n{fenced(text)}" for index, text in enumerate(shown.texts, start=1)]
    return "\n\n".join([" ".join(lines), *rows])


def fenced(text: str) -> str:
    """A Markdown code block holding `text` exactly: its fence is longer than any run of backticks inside, so a row
    cannot close it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _split_text(studio: Studio, found, eval_fraction, eval_dataset: str, mixed_rows: int | None = None) -> str:
    """`mixed_rows`: the rows a mix or row budget takes (None: the dataset's own)."""
    from jobs.data.store import find_dataset, split_sizes
    from jobs.step_plan import eval_fraction_for

    if mixed_rows is not None:
        found = SimpleNamespace(rows=mixed_rows, format=found.format)
    held_out = find_dataset(studio, eval_dataset) if eval_dataset else None
    if held_out is not None:
        return (f"**{found.rows} rows** ({found.format}), all of them train; eval on '{held_out.name}' "
                f"({held_out.rows} rows).")
    fraction, how = eval_fraction_value(eval_fraction), ""
    if fraction is None:
        fraction, how = eval_fraction_for(found.rows), ", chosen for the dataset's size"
    problem = field_problem("eval_fraction", fraction) if isinstance(fraction, float) else "must be a number"
    if problem:
        return f"**{found.rows} rows** ({found.format}); the eval fraction {problem}."
    train_rows, eval_rows = split_sizes(found.rows, fraction)
    return (f"**{found.rows} rows** ({found.format}): {train_rows} train, {eval_rows} eval (eval fraction "
            f"{fraction:g}{how}).")


def _cut_text(studio: Studio, base_model: str, dataset: str, max_length: int, overlong: str, dedup: bool) -> str:
    """What max_length and dedup will do to the rows, counted with the base's tokenizer ("" when it is not here)."""
    from jobs.data.preview import NoTokenizer, dataset_view

    try:
        stats = dataset_view(studio, dataset, base_model, max_length, True, 0)[0]
    except (LookupError, NoTokenizer):
        return ""
    fate = "dropped" if overlong == "drop" else f"cut at {max_length} tokens (their ends are lost)"
    repeats = ("removed" if dedup else "kept (tick 'Drop exact duplicates' to remove them)")
    return (f"{stats.over_max} rows are longer than max_length {max_length}: they will be {fate}. "
            f"{stats.duplicates} rows repeat an earlier row exactly: {repeats}. The Datasets tab shows which tokens "
            f"carry loss.")


def sweep_from_form(studio: Studio, base: dict, axes_text: str, mode: str, name: str,
                    priority: int = 0) -> tuple[str, list[int]]:
    """Queue a sweep over `base` (the form, or a spec): every point a job, one group. Raises SpecError."""
    return submit_sweep(studio, base, axes_from_text(axes_text), mode, name, priority)


def base_status_text(studio: Studio, base_model: str) -> str:
    """Whether a studio base is ready, being prepared (and how far), or will be prepared by its first job."""
    if base_model == SMOLLM2_BASE_MODEL:
        from jobs.models.smollm2 import describe_status

        return (f"{describe_status(studio.settings.models_dir)} To see what fine-tuning does, train it on the "
                f"`pirate` dataset (static/examples/smollm2_pirate_job.json: about 2.5 minutes on 2 CPU cores), "
                f"then ask the base and the adapter anything in the Chat tab.")
    return ""


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, tab: gr.Tab, app: gr.Blocks) -> SpecForm:
    with gr.Row():
        with gr.Column(scale=3):
            summary = SafeMarkdown(elem_id="submit-summary")
            base_status = SafeMarkdown(elem_id="base-status")
            # The head row's fields come from the spec too; these two get the studio's current choices.
            # The base gets most of the row: its label carries the size and fit ("smollm2-135m-instruct · 135M · fits
            # here"), which a quarter of the row cut off under the dropdown's arrow. The name starts empty, datasets
            # and methods are short words: they give the base their width.
            choices = {"base_model": dict(choices=base_choices(studio), value=DEMO_BASE_MODEL, allow_custom_value=True,
                                          scale=3),
                       "dataset": dict(choices=dataset_names(studio), value=EXAMPLE_DATASET, allow_custom_value=True,
                                       min_width=120),
                       "name": dict(min_width=120), "method": dict(min_width=100)}
            with gr.Row(equal_height=True):
                first_row = [component(name, **choices.get(name, {})) for row in form_layout()[HEAD] for name in row]
            start = {}

            def start_row():  # right under the common knobs: on screen at 1400 x 900 without scrolling
                with gr.Row(equal_height=True, elem_id="start-row"):
                    start["priority"] = gr.Number(value=0, precision=0, label="Priority", min_width=120, scale=1,
                                                  info="Higher runs first among queued jobs.")
                    start["submit"] = gr.Button("Submit job", variant="primary", elem_id="submit-job", scale=3)
                start["status"] = SafeMarkdown(elem_id="submit-status")

            form = build_groups(first_row, between=start_row)
            names, controls = form.names, form.controls
            priority, submit, status = start["priority"], start["submit"], start["status"]
            with gr.Accordion("Sweep: one job per point of a grid over any fields", open=False):
                axes = gr.Code(value=SWEEP_EXAMPLE, language="yaml", label="Values to sweep (YAML or JSON)",
                               elem_id="sweep-axes")
                with gr.Row():
                    mode = gr.Radio(["grid", "list"], value="grid", label="Combine", info="grid: every combination; "
                                    "list: the first values together, then the second…")
                    sweep_name = gr.Textbox(label="Sweep name", placeholder="optional", elem_id="sweep-name")
                submit_sweep_button = gr.Button("Submit sweep", elem_id="submit-sweep")
            search_panel.build_start(studio, names, controls, spec_from_form, summary, status)
        with gr.Column(scale=2):
            memory_slot = gr.Column()
            with gr.Accordion("Upload a dataset", open=False):
                upload = gr.File(label="JSONL, JSON, CSV or Parquet", file_types=list(SUFFIXES),
                                 elem_id="train-upload")
                upload_name = gr.Textbox(label="Dataset name", info="How it is listed (letters, digits, - _ .)")
                import_button = gr.Button("Import dataset")
                import_status = SafeMarkdown(elem_id="import-status")
            show_preview = gr.Button("Preview rows as the model sees them", elem_id="show-preview")
            preview_on = gr.State(False)
            preview = SafeMarkdown(label="Preview", elem_id="dataset-preview")
            presets_panel.build(studio, form, app)
    with memory_slot:
        follow_plan = plan_panel.build(studio, form, app)
        memory_panel.build(studio, form, app)
    base_model, dataset = form.control("base_model"), form.control("dataset")
    eval_fraction = form.control("eval_fraction")

    def on_submit(priority_value, *values):
        try:
            job_id = submit_spec(studio, spec_from_form(studio, names, list(values)), int(priority_value or 0))
        except SpecError as error:
            return (gr.update(value=problems_summary(error.problems, "Not queued"), elem_classes=["has-problems"]),
                    "**Not queued** (see the problems above).", *field_updates(names, error.problems))
        return (gr.update(value="", elem_classes=[]), f"Queued job **{job_id}**. Follow it in the Runs tab.",
                *field_updates(names, []))

    def on_sweep(axes_text, how, group, priority_value, *values):
        try:
            group, ids = sweep_from_form(studio, spec_from_form(studio, names, list(values)), axes_text, how, group,
                                         int(priority_value or 0))
        except SpecError as error:
            return (gr.update(value=problems_summary(error.problems, "Sweep not queued"),
                              elem_classes=["has-problems"]), "**Sweep not queued** (see the problems above).",
                    *field_updates(names, error.problems))
        return (gr.update(value="", elem_classes=[]),
                f"Queued sweep **{group}**: jobs {', '.join(map(str, ids))}. Compare them in the Runs tab.",
                *field_updates(names, []))

    def on_import(path, wanted_name):
        fallback = Path(path).stem if path else ""
        wanted = wanted_name or fallback
        try:
            imported = import_upload(studio, path, wanted)
        except DatasetError as error:
            return "**Not imported.**\n\n" + "\n".join(f"- {p}" for p in error.problems), gr.update()
        message = imported.message(wanted)
        return (f"{message[0].upper()}{message[1:]}.",
                gr.update(choices=dataset_names(studio), value=imported.dataset.name))

    def on_show_preview(*inputs):
        return True, render_preview(studio, *inputs)

    def on_preview_input(shown, *inputs):
        # A tokenizer is loaded only once the person has asked for a preview; after that it follows the form.
        return render_preview(studio, *inputs) if shown else gr.update()

    def fresh_choices(current_dataset, current_eval):
        # The choices come from the database on every page load, so an import survives a reload.
        choices = dataset_names(studio)
        value = current_dataset if current_dataset in choices else EXAMPLE_DATASET
        return (gr.update(choices=choices, value=value), gr.update(choices=base_choices(studio)),
                gr.update(choices=eval_choices(choices), value=current_eval if current_eval in choices else ""))

    def show_base_status(base):
        return base_status_text(studio, base)

    def on_base_change(base):
        settings = studio.settings
        kinds = base_module_kinds(base or DEMO_BASE_MODEL, settings.models_dir, settings.model_dirs) or {}
        return (base_status_text(studio, base), gr.update(choices=target_choices(studio, base)),
                gr.update(choices=sorted(kinds)))

    follow_plan(submit.click(on_submit, [priority, *controls], [summary, status, *controls],
                             api_visibility="private"))
    follow_plan(submit_sweep_button.click(on_sweep, [axes, mode, sweep_name, priority, *controls],
                                          [summary, status, *controls], api_visibility="private"))
    import_button.click(on_import, [upload, upload_name], [import_status, dataset], api_visibility="private")
    preview_inputs = [base_model, dataset, eval_fraction, *map(form.control, ("max_length", "eval_dataset",
                                                                              "overlong", "dedup",
                                                                              *PREVIEW_DATA_FIELDS))]
    show_preview.click(on_show_preview, preview_inputs, [preview_on, preview], api_visibility="private")
    for preview_input in preview_inputs:
        preview_input.change(on_preview_input, [preview_on, *preview_inputs], preview, api_visibility="private")
    eval_dataset = form.control("eval_dataset")
    for trigger in (app.load, tab.select):  # a dataset imported in the Datasets tab is offered on return
        trigger(fresh_choices, [dataset, eval_dataset], [dataset, base_model, eval_dataset], api_visibility="private")
    quiet = dict(api_visibility="private", show_progress="hidden")
    method, adapter_controls = form.control("method"), [form.control(name) for name in ADAPTER_FIELDS]

    def fresh_adapter_choices(base, method_value, *current):
        # What each adapter field may name for this base and method (a reward model or a generating adapter), the
        # person's own; a value already there stays (a clone's, or one typed), submit checking it.
        return [gr.update(choices=[NO_ADAPTER, *adapter_choices(studio, base or DEMO_BASE_MODEL, method_value or "sft",
                                                               name)], value=value or "")
                for name, value in zip(ADAPTER_FIELDS, current, strict=True)]

    for trigger in (app.load, tab.select, base_model.change, method.change):
        trigger(fresh_adapter_choices, [base_model, method, *adapter_controls], adapter_controls, **quiet)
    module_controls = [form.control("target_modules"), form.control("modules_to_save")]
    base_model.change(on_base_change, base_model, [base_status, *module_controls], **quiet)
    app.load(on_base_change, base_model, [base_status, *module_controls], **quiet)
    gr.Timer(STATUS_REFRESH_S).tick(show_base_status, base_model, base_status, **quiet)  # a preparation's progress
    return form
