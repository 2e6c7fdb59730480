"""The public API: endpoints with stable names (`gradio_client` does what the browser does). Their type hints are
the API schema; each calls the handler its tab uses, so the browser and the API cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio import FileData

from app import adapters_tab, runs_tab, train_tab
from app.chat_tab import ChatService, generation_settings
from app.errors import user_error
from jobs.chat.request import conversation
from jobs.data.formats import DatasetError
from jobs.data.readers import parse_json_text
from jobs.spec import DEMO_BASE_MODEL, SpecError
from jobs.studio import Studio


def register(studio: Studio, chat: ChatService) -> None:
    """Declare the endpoints; call inside the app's `gr.Blocks`."""

    def submit_job(spec: str, priority: int = 0) -> int:
        """Queue a training job from a spec (JSON text, see docs/api.md). Returns the job id."""
        try:
            return train_tab.submit_spec(studio, spec, priority)
        except (SpecError, DatasetError) as error:
            raise user_error(error.as_text()) from None

    def submit_sweep(spec: str, sweep: str, mode: str = "grid", name: str = "", priority: int = 0) -> dict:
        """Queue a sweep: `spec` (JSON) is the base, `sweep` (YAML or JSON) maps spec fields to lists of values;
        mode 'grid' (every combination) or 'list' (zipped). All points are queued, or none. Returns the group's
        name and its job ids."""
        try:
            base = parse_json_text(spec) if (spec or "").strip() else {}
            group, ids = train_tab.sweep_from_form(studio, base, sweep, mode, name, priority)
        except ValueError as error:
            message = error.as_text() if isinstance(error, SpecError) else f"spec: not valid JSON: {error}"
            raise user_error(message) from None
        return {"group": group, "job_ids": ids}

    def cancel_sweep(name: str) -> dict:
        """Cancel every queued or running job of a sweep. Returns each job's status."""
        return {str(job_id): status for job_id, status in runs_tab.cancel_group(studio, name).items()}

    def get_job(job_id: int) -> dict:
        """One job: status, progress, ETA, latest metrics, error, adapter name, log tail."""
        return runs_tab.job_details(studio, job_id)

    def list_jobs() -> list[dict]:
        """Every job, newest first."""
        return runs_tab.job_list(studio)

    def cancel_job(job_id: int) -> str:
        """Cancel a queued job at once, or ask a running one to stop. Returns the job's status."""
        return runs_tab.cancel(studio, job_id)

    def move_job(job_id: int, where: str) -> list[int]:
        """Move a queued job to the 'front', one place 'up' or 'down', or to the 'back'. Returns the queue's new
        order (job ids; workers take the first)."""
        return runs_tab.move(studio, job_id, where)

    def set_priority(job_id: int, priority: int) -> list[int]:
        """Change a queued job's priority (higher runs first). Returns the queue's new order."""
        return runs_tab.reprioritize(studio, job_id, priority)

    def list_workers() -> list[dict]:
        """Live workers: host, device and its memory, pool, the job each runs, last heartbeat."""
        return runs_tab.worker_list(studio)

    def list_adapters(base_model: str = "") -> list[dict]:
        """Adapters, newest first, optionally only those of one base model."""
        return adapters_tab.adapter_list(studio, base_model)

    def download_adapter(name: str) -> FileData:
        """The adapter's zip: PEFT files, tokenizer, spec, final metrics and model card."""
        path = Path(adapters_tab.adapter_zip(studio, name))
        return FileData(path=str(path), orig_name=path.name)

    def rename_adapter(name: str, new_name: str) -> str:
        """Rename an adapter (names are display-only; its files stay where they are). Returns the new name."""
        return adapters_tab.rename(studio, name, new_name)

    def delete_adapter(name: str) -> str:
        """Delete an adapter: its files and its entry, together."""
        adapters_tab.delete(studio, name)
        return f"deleted {name}"

    def merge_adapter(name: str, dtype: str = "bfloat16") -> int:
        """Queue a job that merges the adapter into a 16-bit copy of its base. Returns the job id."""
        return adapters_tab.merge(studio, name, dtype)

    def download_merged(name: str) -> FileData:
        """The merged model's zip (safetensors, tokenizer, card), once a merge job built it."""
        path = Path(adapters_tab.merged_zip(studio, name))
        return FileData(path=str(path), orig_name=path.name)

    def push_to_hub(name: str, repo_id: str, what: str = "adapter", private: bool = True) -> str:
        """Push the adapter ('adapter') or its merged model ('merged') to a hub repo; needs STUDIO_HF_TOKEN."""
        return adapters_tab.push(studio, name, repo_id, what, private)

    def import_dataset(file: FileData, name: str = "") -> str:
        """Import a dataset file (JSONL, JSON, CSV or Parquet) under `name` (default: the file's name). Returns the
        name it is listed under; a refusal lists every problem, each naming its row or column."""
        path = file.get("path") if isinstance(file, dict) else getattr(file, "path", None)
        try:
            return train_tab.import_upload(studio, path, name or Path(str(path or "")).stem).dataset.name
        except DatasetError as error:
            raise user_error(error.as_text()) from None

    def compare(prompt: str, adapters: list[str], base_model: str = DEMO_BASE_MODEL, max_new_tokens: int = 64,
                temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, system: str = "") -> list[dict]:
        """One prompt to several adapters (and "base") in one batched generate; one reply per adapter."""
        conversations = [conversation(prompt, system=system) for _ in adapters]
        settings = generation_settings(max_new_tokens, temperature, top_p, seed)
        replies: list[str] = []
        for replies in chat.compare_stream(base_model, adapters, conversations, settings):  # noqa: B007
            pass
        return [{"adapter": name, "reply": reply} for name, reply in zip(adapters, replies, strict=True)]

    endpoints = (submit_job, submit_sweep, cancel_sweep, get_job, list_jobs, cancel_job, move_job, set_priority,
                 list_workers, list_adapters, download_adapter, rename_adapter, delete_adapter, merge_adapter,
                 download_merged, push_to_hub, compare, import_dataset)
    for endpoint in endpoints:
        gr.api(endpoint, api_name=endpoint.__name__)
