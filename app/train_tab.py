"""Train tab: every spec field (help text from the spec), dataset upload, an on-request preview, Submit."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import gradio as gr

from jobs.data.formats import SUFFIXES, DatasetError
from jobs.data.store import dataset_names, import_dataset
from jobs.spec import DEMO_BASE_MODEL, EXAMPLE_DATASET, TARGET_PRESETS, SpecError, TrainSpec, field_help
from jobs.studio import Studio
from jobs.submit import submit_job

# Fields laid out in groups, in the order a person decides them.
GROUPS = {
    "LoRA": ["lora_r", "lora_alpha", "lora_dropout", "target_modules"],
    "Quantization": ["quantization", "double_quant", "compute_dtype"],
    "Training": ["max_steps", "num_epochs", "learning_rate", "batch_size", "grad_accum", "max_length", "seed"],
    "More": ["eval_fraction", "eval_steps", "logging_steps", "save_steps", "warmup_ratio", "packing",
             "gradient_checkpointing", "assistant_only_loss"],
}
PREVIEW_ROWS = 3


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def submit_spec(studio: Studio, spec: dict | str, priority: int = 0) -> int:
    """Queue a job from a spec dict or its JSON text. Raises SpecError (every problem, each naming its field)."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec) if spec.strip() else {}
        except json.JSONDecodeError as error:
            raise SpecError.from_text("spec", f"not valid JSON: {error}") from None
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise SpecError.from_text("priority", "must be a whole number")
    return submit_job(studio, spec, priority=priority)


def import_upload(studio: Studio, upload_path: str | None, name: str) -> str:
    """Import an uploaded file as a dataset; returns its name. Raises DatasetError naming every problem."""
    if not upload_path:
        raise DatasetError(["file: choose a JSONL, JSON, CSV or Parquet file to upload"])
    return import_dataset(studio, Path(upload_path), name or "").name


def render_preview(studio: Studio, base_model: str, dataset: str) -> str:
    """The first rows exactly as the model will see them: rendered through the base model's chat template."""
    from jobs.data.preview import preview_rows

    texts = preview_rows(studio, base_model, dataset, PREVIEW_ROWS)
    if texts is None:
        return f"No dataset named '{dataset}'."
    return "\n\n".join(f"**Row {index}**\n```text\n{text}\n```" for index, text in enumerate(texts, start=1))


def spec_from_form(names: list[str], values: list) -> dict:
    """Form values to a raw spec dict; validation happens in one place (jobs.submit)."""
    raw = {}
    for name, value in zip(names, values, strict=True):
        if isinstance(value, float) and value.is_integer() and TrainSpec.model_fields[name].annotation is int:
            value = int(value)
        raw[name] = value
    return raw


# --- layout -------------------------------------------------------------------------------------------------
def _component(name: str):
    """A form control for a spec field, chosen from its type; the label is the field name."""
    field = TrainSpec.model_fields[name]
    default, info = field.default, field_help(name)
    if name == "target_modules":
        return gr.Dropdown(choices=list(TARGET_PRESETS), value=default, allow_custom_value=True, label=name,
                           info=info + " Type a comma-separated list for your own.")
    if typing.get_origin(field.annotation) is typing.Literal:
        return gr.Dropdown(choices=list(typing.get_args(field.annotation)), value=default, label=name, info=info)
    if field.annotation is bool:
        return gr.Checkbox(value=default, label=name, info=info)
    if field.annotation is int:
        return gr.Number(value=default, precision=0, label=name, info=info)
    if field.annotation is float:
        return gr.Number(value=default, label=name, info=info)
    return gr.Textbox(value=default, label=name, info=info)


def build(studio: Studio) -> None:
    names: list[str] = []
    controls: list = []
    with gr.Row():
        with gr.Column(scale=3):
            name = gr.Textbox(label="name", info=field_help("name"))
            base_model = gr.Dropdown(choices=[DEMO_BASE_MODEL], value=DEMO_BASE_MODEL, allow_custom_value=True,
                                     label="base_model", info=field_help("base_model"))
            dataset = gr.Dropdown(choices=dataset_names(studio), value=EXAMPLE_DATASET, allow_custom_value=True,
                                  label="dataset", info=field_help("dataset"))
            names += ["name", "base_model", "dataset"]
            controls += [name, base_model, dataset]
            for title, fields in GROUPS.items():
                with gr.Accordion(title, open=title != "More"), gr.Row():
                    for field in fields:
                        names.append(field)
                        controls.append(_component(field))
            priority = gr.Number(value=0, precision=0, label="priority", info="Higher runs first among queued jobs.")
            submit = gr.Button("Submit job", variant="primary")
            status = gr.Markdown(elem_id="submit-status")
        with gr.Column(scale=2):
            with gr.Accordion("Upload a dataset", open=False):
                upload = gr.File(label="JSONL, JSON, CSV or Parquet", file_types=list(SUFFIXES))
                upload_name = gr.Textbox(label="dataset name", info="How it is listed (letters, digits, - _ .)")
                import_button = gr.Button("Import dataset")
                import_status = gr.Markdown(elem_id="import-status")
            show_preview = gr.Button("Preview rows as the model sees them", elem_id="show-preview")
            preview_on = gr.State(False)
            preview = gr.Markdown(label="Preview", elem_id="dataset-preview")

    def on_submit(priority_value, *values):
        try:
            job_id = submit_spec(studio, spec_from_form(names, list(values)), int(priority_value or 0))
        except SpecError as error:
            return "**Not queued.**\n\n" + "\n".join(f"- **{p.field}**: {p.message}" for p in error.problems)
        return f"Queued job **{job_id}**. Follow it in the Runs tab."

    def on_import(path, wanted_name):
        fallback = Path(path).stem if path else ""
        try:
            imported = import_upload(studio, path, wanted_name or fallback)
        except DatasetError as error:
            return "**Not imported.**\n\n" + "\n".join(f"- {p}" for p in error.problems), gr.update()
        return (f"Imported **{imported}**.", gr.update(choices=dataset_names(studio), value=imported))

    def on_show_preview(base, data):
        return True, render_preview(studio, base, data)

    def on_preview_input(shown, base, data):
        # A tokenizer is loaded only once the person has asked for a preview; after that it follows the form.
        return render_preview(studio, base, data) if shown else gr.update()

    submit.click(on_submit, [priority, *controls], status, api_visibility="private")
    import_button.click(on_import, [upload, upload_name], [import_status, dataset], api_name="import_dataset")
    show_preview.click(on_show_preview, [base_model, dataset], [preview_on, preview], api_visibility="private")
    for trigger in (dataset.change, base_model.change):
        trigger(on_preview_input, [preview_on, base_model, dataset], preview, api_visibility="private")
