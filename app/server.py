"""The Gradio app: four tabs plus the API endpoints (`gradio_client` does what the browser does)."""

from __future__ import annotations

import gradio as gr

from app import adapters_tab, chat_tab, runs_tab, train_tab
from app.handlers import StudioHandlers
from jobs.datasets import DatasetError
from jobs.spec import DEMO_BASE_MODEL, SpecError
from jobs.studio import Studio

TITLE = "QLoRA Studio"


def _api(handlers: StudioHandlers) -> None:
    """Endpoints with stable names; their type hints are the API schema."""

    def submit_job(spec: str, priority: int = 0) -> int:
        """Queue a training job from a spec (JSON text, see docs/api.md). Returns the job id."""
        try:
            return handlers.submit(spec, priority)
        except (SpecError, DatasetError) as error:
            raise gr.Error(error.as_text()) from None

    def get_job(job_id: int) -> dict:
        """One job: status, progress, ETA, latest metrics, error, adapter name, log tail."""
        return handlers.job(job_id)

    def list_jobs() -> list[dict]:
        """Every job, newest first."""
        return handlers.jobs()

    def cancel_job(job_id: int) -> str:
        """Cancel a queued job at once, or ask a running one to stop. Returns the job's status."""
        return handlers.cancel(job_id)

    def list_adapters(base_model: str = "") -> list[dict]:
        """Adapters, newest first, optionally only those of one base model."""
        return handlers.adapters(base_model)

    def compare(prompt: str, adapters: list[str], base_model: str = DEMO_BASE_MODEL, max_new_tokens: int = 64,
                temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, system: str = "") -> list[dict]:
        """One prompt to several adapters (and "base") in one batched generate; one reply per adapter."""
        head = [{"role": "system", "content": system}] if system.strip() else []
        conversations = [head + [{"role": "user", "content": prompt}] for _ in adapters]
        replies = []
        for replies in handlers.compare_stream(base_model, adapters, conversations, max_new_tokens,  # noqa: B007
                                               temperature, top_p, seed):
            pass
        return [{"adapter": name, "reply": reply} for name, reply in zip(adapters, replies, strict=True)]

    for endpoint in (submit_job, get_job, list_jobs, cancel_job, list_adapters, compare):
        gr.api(endpoint, api_name=endpoint.__name__)


def build_app(studio: Studio) -> gr.Blocks:
    handlers = StudioHandlers(studio)
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nFine-tune LoRA adapters on a 4-bit base, watch them train, compare them in chat.")
        with gr.Tab("Train"):
            train = train_tab.build(handlers)
        with gr.Tab("Runs"):
            runs_tab.build(handlers)
        with gr.Tab("Adapters"):
            adapters_tab.build(handlers)
        with gr.Tab("Chat") as chat:
            chat_tab.build(handlers, chat, app)
        _api(handlers)
        app.load(lambda b, d: train_tab.render_preview(handlers, b, d), train["preview_inputs"], train["preview"],
                 api_visibility="private")
    return app

