"""The Gradio app: four tabs plus the API endpoints. Importing it loads no torch or transformers."""

from __future__ import annotations

import gradio as gr

from app import adapters_tab, api, chat_tab, runs_tab, train_tab
from jobs.studio import Studio

TITLE = "QLoRA Studio"


def build_app(studio: Studio) -> gr.Blocks:
    chat = chat_tab.ChatService(studio)
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nFine-tune LoRA adapters on a 4-bit base, watch them train, compare them in chat.")
        with gr.Tab("Train"):
            train_tab.build(studio)
        with gr.Tab("Runs"):
            runs_tab.build(studio)
        with gr.Tab("Adapters"):
            adapters_tab.build(studio)
        with gr.Tab("Chat") as chat_panel:
            chat_tab.build(studio, chat, chat_panel, app)
        api.register(studio, chat)
    return app
