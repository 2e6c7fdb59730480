"""Datasets tab: every stored dataset; import a file (format and column mapping proposed from its columns, and
overridable) or a hub dataset; for the chosen base model and max_length, each dataset's tokens, a histogram of row
lengths against max_length, what a cut would lose, turns per row, the share of tokens that carry loss, and the
rows as the model sees them (loss highlighted, the cut marked); rename; delete (never while a job uses it)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from app.choices import base_models
from app.datasets import loss_view
from app.web.errors import audit, user_error
from app.web.safe_text import SafeMarkdown, clean_html
from jobs.data.errors import DatasetError
from jobs.data.formats import FORMAT_ROLES, FORMATS, Mapping, propose_mapping
from jobs.data.readers import SUFFIXES, read_records
from jobs.data.store import dataset_names, delete_dataset, import_dataset, read_limits
from jobs.data.store import rename_dataset as rename_stored
from jobs.spec import DEMO_BASE_MODEL, EXAMPLE_DATASET, field_default, field_problem
from jobs.studio import Studio
from storage import catalog

SHOWN_ROWS = 3
NO_COLUMN = "(none)"


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def dataset_list(studio: Studio) -> list[dict]:
    with studio.db.read() as session:
        rows = catalog.list_datasets(session)
    return [{"name": d.name, "format": d.format, "rows": d.rows, "sha256": d.sha256, "mapping": d.mapping,
             "source": d.source, "created_at": d.created_at.isoformat()} for d in rows]


def parse_mapping(format_name: str, columns: dict | str | None) -> Mapping | None:
    """A person's mapping from the form or the API ("" format: let the studio propose one)."""
    if not format_name:
        return None
    if isinstance(columns, str):
        try:
            columns = json.loads(columns) if columns.strip() else {}
        except ValueError as error:
            raise user_error(f"columns: not valid JSON ({error})") from None
    if not isinstance(columns, dict):
        raise user_error('columns: a mapping of role to column, e.g. {"instruction": "question"}')
    return Mapping(format_name, {role: str(column) for role, column in columns.items() if column})


def import_file(studio: Studio, path: str | None, name: str, mapping: Mapping | None) -> str:
    if not path:
        raise user_error("file: choose a JSONL, JSON, CSV or Parquet file to upload")
    try:
        imported = import_dataset(studio, Path(path), name or Path(path).stem, mapping)
    except DatasetError as error:
        raise user_error(error.as_text()) from None
    return imported.message(name or Path(path).stem)


def import_hub(studio: Studio, hub_id: str, name: str, config: str, split: str, revision: str,
               mapping: Mapping | None = None) -> str:
    from jobs.data.hub import import_hub_dataset

    try:
        imported = import_hub_dataset(studio, hub_id, name, config, split, revision, mapping)
    except DatasetError as error:
        raise user_error(error.as_text()) from None
    return imported.message(name or hub_id)


def rename(studio: Studio, name: str, new_name: str) -> str:
    try:
        return rename_stored(studio, name, new_name).name
    except DatasetError as error:
        raise user_error(error.as_text()) from None


def delete(studio: Studio, name: str) -> None:
    try:
        delete_dataset(studio, name)
    except DatasetError as error:
        raise user_error(error.as_text()) from None
    audit(studio, "dataset_delete", name)


def inspect(studio: Studio, name: str, base_model: str, max_length: int, assistant_only_loss: bool,
            first_row: int = 1):
    """(stats, `SHOWN_ROWS` rows from `first_row` (1-based) tokenized, tokenizer) of a dataset for a base model."""
    from jobs.data.preview import NoTokenizer, dataset_view

    if problem := field_problem("max_length", int(max_length or 0)):
        raise user_error(f"max_length: {problem}")
    try:
        return dataset_view(studio, name, base_model or DEMO_BASE_MODEL, int(max_length), bool(assistant_only_loss),
                            SHOWN_ROWS, max(0, int(first_row or 1) - 1))
    except NoTokenizer:
        raise user_error(f"base_model: '{base_model}' has no tokenizer on this machine (a hub model not fetched yet, "
                         f"or a folder without one): pick a base that is here") from None
    except LookupError:
        raise user_error(f"name: no dataset named '{name}'") from None


def stats_summary(studio: Studio, name: str, base_model: str, max_length: int, assistant_only_loss: bool) -> dict:
    return inspect(studio, name, base_model, max_length, assistant_only_loss)[0].summary()


def _stats_text(summary: dict) -> str:
    packed = summary["rows_per_packed_sequence"]
    lines = [
        f"**{summary['rows']} rows, {summary['tokens']:,} tokens** (median {summary['median_tokens']:.0f} per row).",
        f"- **{summary['longer_than_max_length']} rows ({summary['share_longer']:.1%}) are longer than "
        f"max_length {summary['max_length']}**: cut at it when training (or dropped, when the job says so).",
        f"- **{summary['no_loss_after_cut']} rows lose every answer token to the cut** and are skipped by the "
        "trainer (raise max_length or shorten their prompts)." if summary["no_loss_after_cut"] else "",
        f"- {summary['loss_token_share']:.0%} of the tokens kept carry loss; {summary['mean_turns']:.1f} user turns "
        f"per row on average; {summary['exact_duplicates']} exact duplicate rows.",
        f"- With packing, a sequence of max_length holds {packed:.1f} rows on average." if packed else ""]
    return "\n".join(line for line in lines if line)


def _histogram(summary_stats) -> gr.BarPlot:
    """Each bucket a bar over its whole span of lengths. Plotted at its start on a plain numeric axis, the first
    bar sat centred on 0 and the axis began at -50, a length no row can have."""
    buckets = summary_stats.histogram()
    frame = pd.DataFrame([{"tokens": f"{start}–{end}", "rows": count, "start": start,
                           "cut": "past max_length" if start >= summary_stats.max_length else "kept"}
                          for start, end, count in buckets])
    return gr.BarPlot(frame, x_bin=buckets[0][1] - buckets[0][0])


def datasets_frame(studio: Studio, base_model: str = DEMO_BASE_MODEL) -> pd.DataFrame:
    """Every stored dataset; its tokens for `base_model` once a tokenizer is in memory (after the first Inspect)."""
    from jobs.data.preview import dataset_tokens

    rows = []
    for d in dataset_list(studio):
        tokens = dataset_tokens(studio, d["name"], d["sha256"], base_model or DEMO_BASE_MODEL)
        rows.append([d["name"], d["format"], d["rows"], "inspect to count" if tokens is None else f"{tokens:,}",
                     d["sha256"][:12], _source(d["source"]), d["created_at"][:16]])
    return pd.DataFrame(rows, columns=["name", "format", "rows", f"tokens ({Path(base_model or '').name})",
                                       "sha256", "source", "created"])


def _source(source: dict | None) -> str:
    if not source:
        return "bundled" if source is None else ""
    if "hub" in source:
        return f"hub {source['hub']}@{(source.get('revision') or '')[:8]}"
    if "votes" in source:
        return f"blind votes on {source['votes']}"
    return f"file {source.get('file', '')}"


def proposal(studio: Studio, path: str | None) -> tuple[str, list[str], Mapping | None]:
    """(what the file looks like, its columns, the proposed mapping) for the import form."""
    if not path:
        return "", [], None
    try:
        records = read_records(Path(path), read_limits(studio))
    except DatasetError as error:
        return error.as_text(), [], None
    columns = sorted({str(c) for record in records[:50] for c in record})
    mapping = propose_mapping(records)
    found = (f"Proposed: **{mapping.format}** with {', '.join(f'{r} ← {c}' for r, c in mapping.columns.items())}."
             if mapping else "No format matched these columns: choose one and map the columns.")
    return f"{len(records)} rows; columns: {', '.join(columns)}. {found}", columns, mapping


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, tab: gr.Tab, app: gr.Blocks) -> None:
    table = gr.Dataframe(interactive=False, label="Datasets (click a row to inspect it)", elem_id="datasets-table")
    with gr.Accordion("Import a file (format and columns proposed, yours to change) or a hub dataset", open=False):
        with gr.Row():
            upload = gr.File(label="JSONL, JSON, CSV or Parquet", file_types=list(SUFFIXES), scale=2,
                             elem_id="dataset-upload")
            found = SafeMarkdown(elem_id="dataset-proposal")
        with gr.Row():
            format_choice = gr.Dropdown(list(FORMATS), label="Format", scale=1, elem_id="dataset-format")
            role_columns = {role: gr.Dropdown([NO_COLUMN], value=NO_COLUMN, label=f"column for '{role}'", scale=1,
                                              visible=False, elem_id=f"role-{role}")
                            for role in dict.fromkeys(r for roles in FORMAT_ROLES.values() for r in roles)}
        with gr.Row():
            new_dataset_name = gr.Textbox(label="Dataset name", placeholder="default: the file's name", scale=2)
            import_button = gr.Button("Import", variant="primary", scale=1, elem_id="dataset-import")
        with gr.Row():
            hub_id = gr.Textbox(label="Hub dataset id", placeholder="owner/name", scale=2)
            hub_config = gr.Textbox(label="Config", scale=1)
            hub_split = gr.Textbox(label="Split", value="train", scale=1)
            hub_revision = gr.Textbox(label="Revision", placeholder="main", scale=1)
            hub_button = gr.Button("Import from the hub", scale=1)
        import_status = SafeMarkdown(elem_id="dataset-import-status")
    with gr.Row():
        picked = gr.Dropdown(dataset_names(studio), value=EXAMPLE_DATASET, label="Dataset to inspect", scale=2,
                             elem_id="dataset-picked")
        base = gr.Dropdown(base_models(studio), value=DEMO_BASE_MODEL, label="Base model (its tokenizer)", scale=2,
                           elem_id="dataset-base")
        max_length = gr.Number(field_default("max_length"), precision=0, label="max_length",
                               scale=1)
        assistant_only = gr.Checkbox(True, label="Assistant-only loss", scale=1)
        first_row = gr.Number(1, precision=0, minimum=1, label="Show rows from", scale=1, elem_id="dataset-first-row")
        show = gr.Button("Inspect", variant="primary", scale=1, elem_id="dataset-inspect")
    with gr.Row():
        with gr.Column(scale=2):
            summary = SafeMarkdown(elem_id="dataset-stats")
        with gr.Column(scale=3):
            histogram = gr.BarPlot(x="start", y="rows", color="cut", title="Rows by token length",
                                   x_title="tokens per row", height=260, elem_id="dataset-histogram")
    seen = gr.HTML(elem_id="dataset-seen")
    with gr.Row():
        new_name = gr.Textbox(label="Rename to", scale=2)
        rename_button = gr.Button("Rename", scale=1)
        delete_button = gr.Button("Delete dataset", variant="stop", scale=1, elem_id="dataset-delete")
    status = SafeMarkdown(elem_id="dataset-status")

    def fresh(base_model):
        return (datasets_frame(studio, base_model), gr.update(choices=dataset_names(studio)),
                gr.update(choices=base_models(studio)))

    def on_upload(path):
        text, columns, mapping = proposal(studio, path)
        chosen = mapping.format if mapping else None
        return (text, gr.update(value=chosen), *_role_updates(chosen, columns, mapping))

    def _role_updates(format_name, columns, mapping=None):
        roles = FORMAT_ROLES.get(format_name or "", {})
        return [gr.update(visible=role in roles, choices=[NO_COLUMN, *columns],
                          value=(mapping.columns.get(role) if mapping and role in mapping.columns else NO_COLUMN))
                for role in role_columns]

    def on_format(format_name, path):
        _, columns, mapping = proposal(studio, path)
        keep = mapping if mapping and mapping.format == format_name else None
        return _role_updates(format_name, columns, keep)

    def chosen_mapping(format_name, chosen):
        columns = {role: column for role, column in zip(role_columns, chosen, strict=True)
                   if column and column != NO_COLUMN and role in FORMAT_ROLES.get(format_name or "", {})}
        return parse_mapping(format_name, columns)

    def on_import(path, format_name, wanted, base_model, *chosen):
        message = import_file(studio, path, wanted, chosen_mapping(format_name, chosen))
        # Imported: the form empties, ready for the next file.
        cleared = [None, "", gr.update(value=None), "", *_role_updates(None, [])]
        return f"{message[0].upper()}{message[1:]}.", *fresh(base_model), *cleared

    def on_hub(identifier, config, split, revision, wanted, format_name, base_model, *chosen):
        message = import_hub(studio, identifier, wanted, config, split, revision, chosen_mapping(format_name, chosen))
        return f"{message[0].upper()}{message[1:]}.", *fresh(base_model)

    def on_inspect(name, base_model, length, only_assistant, first):
        try:
            stats, shown, tokenizer = inspect(studio, name, base_model, int(length or 0), only_assistant, first)
        except gr.Error as refused:  # said where the stats go; the table, histogram and rows stay as they were
            return f"**Not inspected:** {refused.message}", gr.update(), gr.update(), gr.update()
        return (_stats_text(stats.summary()), _histogram(stats),
                clean_html(loss_view.rows_html(tokenizer, shown, int(length or 0))), datasets_frame(studio, base_model))

    def on_select(event: gr.SelectData):
        return event.row_value[0]

    def on_rename(name, wanted, base_model):
        renamed = rename(studio, name, wanted)
        return f"Renamed **{name}** to **{renamed}**.", datasets_frame(studio, base_model), gr.update(
            choices=dataset_names(studio), value=renamed)

    def on_delete(name, base_model):
        delete(studio, name)
        return f"Deleted **{name}** (its file and its entry).", datasets_frame(studio, base_model), gr.update(
            choices=dataset_names(studio), value=EXAMPLE_DATASET)

    private = dict(api_visibility="private")
    for trigger in (tab.select, app.load):
        trigger(fresh, base, [table, picked, base], **private)
    upload.upload(on_upload, upload, [found, format_choice, *role_columns.values()], **private)
    format_choice.input(on_format, [format_choice, upload], list(role_columns.values()), **private)
    import_button.click(on_import, [upload, format_choice, new_dataset_name, base, *role_columns.values()],
                        [import_status, table, picked, base, upload, found, format_choice, new_dataset_name,
                         *role_columns.values()], **private)
    hub_button.click(on_hub, [hub_id, hub_config, hub_split, hub_revision, new_dataset_name, format_choice, base,
                              *role_columns.values()], [import_status, table, picked, base], **private)
    table.select(on_select, None, picked, **private)
    inspect_inputs = [picked, base, max_length, assistant_only, first_row]
    inspect_outputs = [summary, histogram, seen, table]
    show.click(on_inspect, inspect_inputs, inspect_outputs, **private)
    for control in inspect_inputs:  # what the model sees follows every setting, once a tokenizer is loaded
        control.change(partial(_maybe_inspect, on_inspect), inspect_inputs, inspect_outputs, **private)
    rename_button.click(on_rename, [picked, new_name, base], [status, table, picked], **private)
    delete_button.click(on_delete, [picked, base], [status, table, picked], **private)


def _maybe_inspect(inspect_fn, *inputs):
    """Inspecting on every change loads a tokenizer; do it only once one is in memory (after the first Inspect)."""
    from jobs.data.preview import tokenizer_loaded

    if not tokenizer_loaded():
        return gr.update(), gr.update(), gr.update(), gr.update()
    return inspect_fn(*inputs)
