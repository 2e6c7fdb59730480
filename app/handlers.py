"""What every UI action and API endpoint does, in plain Python. Each handler validates its own input and
raises `gr.Error` naming every problem; the tabs and `gr.api` endpoints are thin wiring around these."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from app import views
from jobs.datasets import DatasetError
from jobs.spec import DEMO_BASE_MODEL, EXAMPLE_DATASET, SpecError
from jobs.studio import Studio
from jobs.submit import cancel_job, import_dataset, submit_job
from jobs.supervisor import log_tail, run_dir_for
from storage import catalog, jobs_repo

BASE_PANE = "base"


class StudioHandlers:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._chat = None
        self._chat_lock = threading.Lock()

    # --- jobs -------------------------------------------------------------------------------------------
    def submit(self, spec: dict | str, priority: int = 0) -> int:
        """Queue a job. Raises SpecError (every problem, each naming its field)."""
        if isinstance(spec, str):
            try:
                spec = json.loads(spec) if spec.strip() else {}
            except json.JSONDecodeError as error:
                raise SpecError.from_text("spec", f"not valid JSON: {error}") from None
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise SpecError.from_text("priority", "must be a whole number")
        return submit_job(self.studio, spec, priority=priority)

    def job(self, job_id: int) -> dict:
        with self.studio.db.read() as session:
            job = jobs_repo.get_job(session, int(job_id))
            if job is None:
                raise gr.Error(f"job_id: no job with id {job_id}")
            summary = views.job_summary(job)
            names = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s")
            latest = jobs_repo.latest_metrics(session, [job.id], names).get(job.id, {})
            summary["metrics"] = {name: latest.get(name) for name in names}
            adapter = catalog.adapter_for_job(session, job.id)
            queue = jobs_repo.queued_job_ids(session)
        summary["adapter"] = adapter.name if adapter else None
        summary["queue_position"] = queue.index(job.id) + 1 if job.id in queue else None
        summary["queue_length"] = len(queue)
        summary["log_tail"] = log_tail(run_dir_for(self.studio, job.id) / "train.log", 40)
        return summary

    def newest_job_id(self) -> int | None:
        with self.studio.db.read() as session:
            newest = jobs_repo.list_jobs(session, limit=1)
        return newest[0].id if newest else None

    def jobs(self) -> list[dict]:
        with self.studio.db.read() as session:
            return [views.job_summary(job) for job in jobs_repo.list_jobs(session)]

    def jobs_frame(self):
        with self.studio.db.read() as session:
            jobs = jobs_repo.list_jobs(session)
            latest = jobs_repo.latest_metrics(session, [job.id for job in jobs], ("loss", "eval_loss"))
        return views.jobs_table(jobs, latest)

    def loss_curve(self, job_id: int):
        with self.studio.db.read() as session:
            return views.loss_curve(jobs_repo.metrics_for(session, int(job_id)))

    def cancel(self, job_id: int) -> str:
        try:
            return cancel_job(self.studio, int(job_id))
        except (LookupError, TypeError, ValueError):
            raise gr.Error(f"job_id: no job with id {job_id}") from None

    # --- datasets and adapters ------------------------------------------------------------------------------
    def import_dataset(self, upload_path: str | None, name: str) -> str:
        if not upload_path:
            raise DatasetError(["file: choose a JSONL, JSON, CSV or Parquet file to upload"])
        dataset = import_dataset(self.studio, Path(upload_path), name or "")
        return dataset.name

    def dataset_names(self) -> list[str]:
        with self.studio.db.read() as session:
            names = [d.name for d in catalog.list_datasets(session)]
        return [EXAMPLE_DATASET] + sorted({n for n in names if n != EXAMPLE_DATASET})

    def adapters(self, base_model: str = "") -> list[dict]:
        with self.studio.db.read() as session:
            rows = catalog.list_adapters(session, base_model or None)
        return [{"name": a.name, "base_model": a.base_model, "size_bytes": a.size_bytes, "job_id": a.job_id,
                 "created_at": a.created_at.isoformat()} for a in rows]

    def adapters_frame(self):
        with self.studio.db.read() as session:
            return views.adapters_table(catalog.list_adapters(session))

    def adapter_zip(self, name: str) -> str:
        from jobs.export import build_adapter_zip

        with self.studio.db.read() as session:
            adapter = catalog.get_adapter_by_name(session, (name or "").strip())
        if adapter is None:
            raise gr.Error(f"name: no adapter named '{name}'")
        # The path comes from our own row, never from the request.
        zip_path = build_adapter_zip(self.studio.absolute(adapter.path), self.studio.settings.exports_dir,
                                     adapter.name)
        return str(zip_path)

    def base_models(self) -> list[str]:
        with self.studio.db.read() as session:
            bases = {a.base_model for a in catalog.list_adapters(session)}
        return [DEMO_BASE_MODEL] + sorted(bases - {DEMO_BASE_MODEL})

    # --- chat -----------------------------------------------------------------------------------------------
    def _chat_engine(self):
        with self._chat_lock:
            if self._chat is None:
                from jobs.chat import ChatEngine

                self._chat = ChatEngine(self.studio.settings.models_dir)
            return self._chat

    def _panes(self, base_model: str, names: list[str]) -> list[tuple[str, Path | None]]:
        problems, panes = [], []
        if not names:
            problems.append("adapters: pick at least one adapter or 'base'")
        if len(set(names)) != len(names):
            problems.append("adapters: each adapter may appear once")
        with self.studio.db.read() as session:
            for name in names:
                if name == BASE_PANE:
                    panes.append((name, None))
                    continue
                adapter = catalog.get_adapter_by_name(session, name)
                if adapter is None:
                    problems.append(f"adapters: no adapter named '{name}'")
                elif adapter.base_model != base_model:
                    problems.append(f"adapters: '{name}' was trained on '{adapter.base_model}', not '{base_model}'")
                else:
                    panes.append((name, self.studio.absolute(adapter.path)))
        if problems:
            raise gr.Error("\n".join(problems))
        return panes

    def compare_stream(self, base_model: str, names: list[str], conversations: list[list[dict]],
                       max_new_tokens: int, temperature: float, top_p: float, seed: int) -> Iterator[list[str]]:
        from jobs.chat import GenerationSettings

        settings = GenerationSettings(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                                      top_p=float(top_p), seed=int(seed))
        problems = settings.problems()
        if not any(c and c[-1].get("content", "").strip() for c in conversations):
            problems.append("prompt: type a message first")
        if problems:
            raise gr.Error("\n".join(problems))
        panes = self._panes(base_model or DEMO_BASE_MODEL, list(names))
        yield from self._chat_engine().stream(base_model or DEMO_BASE_MODEL, panes, conversations, settings)
