"""The Gradio app: five tabs plus the API endpoints. Importing it loads no torch or transformers."""

from __future__ import annotations

import gradio as gr

from app import accounts, adapters_tab, api, chat_tab, datasets_tab, notices, runs_tab, train_tab
from jobs.studio import REPO_ROOT, Studio

TITLE = "QLoRA Studio"
STATIC_DIR = REPO_ROOT / "static"


def build_app(studio: Studio, chat: chat_tab.ChatService | None = None) -> gr.Blocks:
    chat = chat or chat_tab.ChatService(studio)
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nFine-tune LoRA adapters on a 4-bit base, watch them train, compare them in chat.")
        with gr.Tabs() as tabs:
            with gr.Tab("Train", id="train") as train_panel:
                form = train_tab.build(studio, train_panel, app)
            with gr.Tab("Datasets", id="datasets") as datasets_panel:
                datasets_tab.build(studio, datasets_panel, app)
            with gr.Tab("Runs", id="runs"):
                runs_tab.build(studio, app, form, tabs)
            with gr.Tab("Adapters", id="adapters") as adapters_panel:
                adapters_tab.build(studio, adapters_panel, app)
            with gr.Tab("Chat", id="chat") as chat_panel:
                chat_tab.build(studio, chat, chat_panel, app)
        api.register(studio, chat)
        notices.build(studio, app)
    accounts.guard_events(app, studio)  # every handler, UI and API alike, runs as the signed-in person
    return app


def launch_options(studio: Studio) -> dict:
    """What `launch()` needs besides the address: the studio's style and script, and the one folder it serves."""
    script = (STATIC_DIR / "studio.js").read_text(encoding="utf-8")
    return dict(css=(STATIC_DIR / "studio.css").read_text(encoding="utf-8"), head=f"<script>{script}</script>",
                allowed_paths=[str(studio.settings.exports_dir)], show_error=True,
                max_file_size=studio.settings.max_upload_bytes)  # the browser refuses a larger upload up front
