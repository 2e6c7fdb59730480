"""Adapters tab: what was trained, and a zip download that loads anywhere PEFT loads."""

from __future__ import annotations

import gradio as gr

from app.handlers import StudioHandlers


def build(handlers: StudioHandlers) -> None:
    table = gr.Dataframe(value=handlers.adapters_frame, interactive=False, label="Adapters (click a row to pick it)",
                         elem_id="adapters-table")
    with gr.Row():
        name = gr.Textbox(label="adapter name", elem_id="adapter-name")
        download = gr.Button("Download zip", variant="primary")
        refresh = gr.Button("Refresh list")
    archive = gr.File(label="Download", interactive=False, elem_id="adapter-zip")

    def on_select(event: gr.SelectData):
        return event.row_value[0]

    table.select(on_select, None, name, api_visibility="private")
    download.click(handlers.adapter_zip, name, archive, api_name="download_adapter")
    refresh.click(handlers.adapters_frame, None, table, api_visibility="private")
