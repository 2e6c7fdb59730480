"""Train tab: every spec field (help text from the spec), dataset upload and preview, Submit."""

from __future__ import annotations

import typing
from pathlib import Path

import gradio as gr

from app.handlers import StudioHandlers
from jobs.datasets import SUFFIXES, DatasetError, load_rows
from jobs.spec import DEMO_BASE_MODEL, TARGET_PRESETS, SpecError, TrainSpec, field_help

# Fields laid out in groups, in the order a person decides them.
GROUPS = {
    "LoRA": ["lora_r", "lora_alpha", "lora_dropout", "target_modules"],
    "Quantization": ["quantization", "double_quant", "compute_dtype"],
    "Training": ["max_steps", "num_epochs", "learning_rate", "batch_size", "grad_accum", "max_length", "seed"],
    "More": ["eval_fraction", "eval_steps", "logging_steps", "save_steps", "warmup_ratio", "packing",
             "gradient_checkpointing", "assistant_only_loss"],
}
PREVIEW_ROWS = 3


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


def spec_from_form(names: list[str], values: list) -> dict:
    """Form values to a raw spec dict; validation happens in one place (jobs.submit)."""
    raw = {}
    for name, value in zip(names, values, strict=True):
        if isinstance(value, float) and value.is_integer() and TrainSpec.model_fields[name].annotation is int:
            value = int(value)
        raw[name] = value
    return raw


def render_preview(handlers: StudioHandlers, base_model: str, dataset: str) -> str:
    """The first rows exactly as the model will see them: rendered through the base model's chat template."""
    from jobs.submit import dataset_path

    path = dataset_path(handlers.studio, dataset) if dataset else None
    if path is None:
        return f"No dataset named '{dataset}'."
    rows = load_rows(path)[:PREVIEW_ROWS]
    tokenizer = _tokenizer_for(handlers, base_model)
    blocks = []
    for index, row in enumerate(rows, start=1):
        if tokenizer is not None:
            text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        else:
            text = "\n".join(f"[{m['role']}] {m['content']}" for m in row["messages"])
        blocks.append(f"**Row {index}**\n```text\n{text}\n```")
    return "\n\n".join(blocks)


def _tokenizer_for(handlers: StudioHandlers, base_model: str):
    from transformers import AutoTokenizer

    from jobs.base_models import base_model_problem, looks_local, resolve_base_model

    if base_model != DEMO_BASE_MODEL and (base_model_problem(base_model) or not looks_local(base_model)):
        return None  # a hub id cannot be fetched offline; show plain messages instead
    try:
        return AutoTokenizer.from_pretrained(resolve_base_model(base_model, handlers.studio.settings.models_dir))
    except (OSError, ValueError):
        return None


def build(handlers: StudioHandlers) -> dict:
    names: list[str] = []
    controls: list = []
    with gr.Row():
        with gr.Column(scale=3):
            name = gr.Textbox(label="name", info=field_help("name"))
            base_model = gr.Dropdown(choices=[DEMO_BASE_MODEL], value=DEMO_BASE_MODEL, allow_custom_value=True,
                                     label="base_model", info=field_help("base_model"))
            dataset = gr.Dropdown(choices=handlers.dataset_names(), value="example", allow_custom_value=True,
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
            preview = gr.Markdown(label="Preview", elem_id="dataset-preview")

    def on_submit(priority_value, *values):
        try:
            job_id = handlers.submit(spec_from_form(names, list(values)), int(priority_value or 0))
        except SpecError as error:
            return "**Not queued.**\n\n" + "\n".join(f"- **{p.field}**: {p.message}" for p in error.problems)
        return f"Queued job **{job_id}**. Follow it in the Runs tab."

    def on_import(path, wanted_name):
        fallback = Path(path).stem if path else ""
        try:
            imported = handlers.import_dataset(path, wanted_name or fallback)
        except DatasetError as error:
            return "**Not imported.**\n\n" + "\n".join(f"- {p}" for p in error.problems), gr.update()
        return (f"Imported **{imported}**.", gr.update(choices=handlers.dataset_names(), value=imported))

    submit.click(on_submit, [priority, *controls], status, api_name="submit_form")
    import_button.click(on_import, [upload, upload_name], [import_status, dataset], api_name="import_dataset")
    for trigger in (dataset.change, base_model.change):
        trigger(lambda b, d: render_preview(handlers, b, d), [base_model, dataset], preview,
                api_visibility="private")
    return {"preview_inputs": [base_model, dataset], "preview": preview}
