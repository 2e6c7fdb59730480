"""Adapters tab: what was trained, and a zip download that loads anywhere PEFT loads."""

from __future__ import annotations

import gradio as gr

from app import views
from jobs.studio import Studio
from storage import catalog


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def adapter_list(studio: Studio, base_model: str = "") -> list[dict]:
    with studio.db.read() as session:
        rows = catalog.list_adapters(session, base_model or None)
    return [{"name": a.name, "base_model": a.base_model, "size_bytes": a.size_bytes, "job_id": a.job_id,
             "created_at": a.created_at.isoformat()} for a in rows]


def adapters_frame(studio: Studio):
    with studio.db.read() as session:
        return views.adapters_table(catalog.list_adapters(session))


def adapter_zip(studio: Studio, name: str) -> str:
    """Build the adapter's zip in the exports folder and return its path."""
    from jobs.training.export import build_adapter_zip

    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, (name or "").strip())
    if adapter is None:
        raise gr.Error(f"name: no adapter named '{name}'")
    # The path comes from our own row, never from the request.
    return str(build_adapter_zip(studio.absolute(adapter.path), studio.settings.exports_dir, adapter.name))


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio) -> None:
    table = gr.Dataframe(value=lambda: adapters_frame(studio), interactive=False,
                         label="Adapters (click a row to pick it)", elem_id="adapters-table")
    with gr.Row():
        name = gr.Textbox(label="adapter name", elem_id="adapter-name")
        download = gr.Button("Download zip", variant="primary")
        refresh = gr.Button("Refresh list")
    archive = gr.File(label="Download", interactive=False, elem_id="adapter-zip")

    def on_select(event: gr.SelectData):
        return event.row_value[0]

    table.select(on_select, None, name, api_visibility="private")
    def download_adapter(name: str) -> str:
        return adapter_zip(studio, name)

    download.click(download_adapter, name, archive, api_name="download_adapter")
    refresh.click(lambda: adapters_frame(studio), None, table, api_visibility="private")
