"""The Gradio app: its tabs plus the API endpoints. Importing it loads no torch or transformers."""

from __future__ import annotations

import gradio as gr
import gradio.routes
from starlette.middleware import Middleware

from app.account import tab as account_tab
from app.adapters import tab as adapters_tab
from app.chat import tab as chat_tab
from app.datasets import tab as datasets_tab
from app.evaluate import tab as evaluate_tab
from app.runs import tab as runs_tab
from app.train import tab as train_tab
from app.web import accounts, api, notices, openai_api
from app.web.gate import Gate, Identity
from app.web.guard import Guard
from jobs.presets import MAX_PRESET_FILE_BYTES
from jobs.studio import REPO_ROOT, Studio
from storage.access import Person, acting_as

TITLE = "QLoRA Studio"
STATIC_DIR = REPO_ROOT / "static"


BUILD_VIEWER = Person("")
"""Whom the page is built as: no one. What the page holds before it loads is everyone's (bundled datasets, studio
bases); each person's own lists arrive with their page's load events."""


def build_app(studio: Studio, chat: chat_tab.ChatService | None = None) -> gr.Blocks:
    chat = chat or chat_tab.ChatService(studio)
    with acting_as(BUILD_VIEWER), gr.Blocks(title=TITLE) as app:
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
            with gr.Tab("Evaluate", id="evaluate") as evaluate_panel:
                evaluate_tab.build(studio, evaluate_panel, app)
            with gr.Tab("Chat", id="chat") as chat_panel:
                chat_tab.build(studio, chat, chat_panel, app)
            with gr.Tab("Account", id="account") as account_panel:
                account_tab.build(studio, account_panel, app)
        api.register(studio, chat)
        notices.build(studio, app)
    accounts.guard_events(app, studio)  # every handler, UI and API alike, runs as the signed-in person
    app.studio_serve = openai_api.build(studio, chat.scheduler)  # /v1: the same scheduler as chat
    return app


STUDIO_SCRIPT = "studio.js"
"""Served by app/web/guard.py from static/, as a file: the page's policy allows no inline script but Gradio's own."""
UPLOAD_FRAMING_BYTES = 64 << 10
"""An upload's multipart framing on top of the file itself; the import checks the file's exact size."""


def launch_options(studio: Studio, gate: Gate | None = None, app: gr.Blocks | None = None) -> dict:
    """What `launch()` needs besides the address: the studio's front door (sign-in, sessions, file ownership,
    upload limits, security headers: app/web/guard.py), its style and script, and the one folder it serves; with
    `app` (built by build_app), its OpenAI-compatible API under /v1 (app/web/openai_api.py)."""
    gate = gate or Gate(studio)
    guard = Middleware(Guard, gate=gate, upload_limit=upload_limit(studio),
                       exports_dir=studio.settings.exports_dir, serve=getattr(app, "studio_serve", None))
    return dict(css=(STATIC_DIR / "studio.css").read_text(encoding="utf-8"),
                head=f'<script src="{STUDIO_SCRIPT}"></script>',
                allowed_paths=[str(studio.settings.exports_dir)], show_error=True,
                max_file_size=studio.settings.max_upload_bytes,  # the browser refuses a larger upload up front
                auth_dependency=signed_in_name, app_kwargs={"middleware": [guard]})


def signed_in_name(request: gradio.routes.fastapi.Request) -> str | None:
    """Gradio's `auth_dependency`: the person app/web/guard.py identified for this request (None: nobody)."""
    identity = request.scope.get("state", {}).get("studio_identity")
    return identity.name if isinstance(identity, Identity) else None


def upload_limit(studio: Studio):
    """What one upload request may carry for a person, and the refusal past it (app/web/guard.py): the largest file they
    may upload, no more than their datasets may still take (jobs/data/quota.py), plus the form's framing. A person
    who keeps as many datasets as allowed may still upload a preset-sized
    file (`MAX_PRESET_FILE_BYTES`), nothing more."""
    from jobs.data.quota import allowance

    def limit(identity: Identity) -> tuple[int, str]:
        person = Person(identity.name or "", admin=identity.admin or not identity.accounts)
        allowed = allowance(studio, person)
        if allowed.datasets_left <= 0:
            return MAX_PRESET_FILE_BYTES + UPLOAD_FRAMING_BYTES, (
                f"upload: {allowed.storing_problem(0)} (files up to {MAX_PRESET_FILE_BYTES >> 10} KiB, such as "
                f"presets, still upload)")
        allowed_bytes = min(allowed.max_file_bytes, allowed.storage_left_bytes) + UPLOAD_FRAMING_BYTES
        return allowed_bytes, (f"upload: larger than the {allowed_bytes:,} bytes this account may upload (the "
                               f"files' size with their form framing)")

    return limit
