"""The public API: endpoints with stable names (`gradio_client` does what the browser does). Their type hints are
the API schema; each calls the handler its tab uses, so the browser and the API cannot drift apart."""

from __future__ import annotations

import gradio as gr

from app import adapters_tab, runs_tab, train_tab
from app.chat_tab import ChatService, generation_settings
from jobs.chat.request import conversation
from jobs.data.formats import DatasetError
from jobs.spec import DEMO_BASE_MODEL, SpecError
from jobs.studio import Studio


def register(studio: Studio, chat: ChatService) -> None:
    """Declare the endpoints; call inside the app's `gr.Blocks`."""

    def submit_job(spec: str, priority: int = 0) -> int:
        """Queue a training job from a spec (JSON text, see docs/api.md). Returns the job id."""
        try:
            return train_tab.submit_spec(studio, spec, priority)
        except (SpecError, DatasetError) as error:
            raise gr.Error(error.as_text()) from None

    def get_job(job_id: int) -> dict:
        """One job: status, progress, ETA, latest metrics, error, adapter name, log tail."""
        return runs_tab.job_details(studio, job_id)

    def list_jobs() -> list[dict]:
        """Every job, newest first."""
        return runs_tab.job_list(studio)

    def cancel_job(job_id: int) -> str:
        """Cancel a queued job at once, or ask a running one to stop. Returns the job's status."""
        return runs_tab.cancel(studio, job_id)

    def list_adapters(base_model: str = "") -> list[dict]:
        """Adapters, newest first, optionally only those of one base model."""
        return adapters_tab.adapter_list(studio, base_model)

    def compare(prompt: str, adapters: list[str], base_model: str = DEMO_BASE_MODEL, max_new_tokens: int = 64,
                temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, system: str = "") -> list[dict]:
        """One prompt to several adapters (and "base") in one batched generate; one reply per adapter."""
        conversations = [conversation(prompt, system=system) for _ in adapters]
        settings = generation_settings(max_new_tokens, temperature, top_p, seed)
        replies: list[str] = []
        for replies in chat.compare_stream(base_model, adapters, conversations, settings):  # noqa: B007
            pass
        return [{"adapter": name, "reply": reply} for name, reply in zip(adapters, replies, strict=True)]

    for endpoint in (submit_job, get_job, list_jobs, cancel_job, list_adapters, compare):
        gr.api(endpoint, api_name=endpoint.__name__)
