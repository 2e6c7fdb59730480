"""The public API: endpoints with stable names (`gradio_client` does what the browser does). Their type hints are
the API schema; each calls the handler its tab uses, so the browser and the API cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio import FileData

from app.account import tab as account_tab
from app.adapters import tab as adapters_tab
from app.chat import blind_panel, suites_panel
from app.chat.tab import ChatService
from app.choices import base_models
from app.datasets import tab as datasets_tab
from app.evaluate import tab as evaluate_tab
from app.runs import search_panel
from app.runs import tab as runs_tab
from app.train import presets_panel
from app.train import tab as train_tab
from app.train.spec_form import target_choices
from app.web import api_reads
from app.web.errors import user_error
from app.web.gate import Gate
from jobs.chat.request import GenerationSettings, conversation
from jobs.data.formats import DatasetError
from jobs.data.readers import parse_json_text
from jobs.models.resolve import allowed_model_roots, base_model_problem, base_module_kinds
from jobs.search import driver
from jobs.spec import DEMO_BASE_MODEL, SpecError, field_default
from jobs.studio import Studio


def register(studio: Studio, chat: ChatService) -> None:
    """Declare the endpoints; call inside the app's `gr.Blocks`."""
    gate = Gate(studio)  # password checks through a bounded pool, as at sign-in

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

    def start_search(spec: str, space: str, budget_trials: int, budget_minutes: float = 0, parallel: int = 1,
                     pruner: str = "hyperband", name: str = "", start_from_plan: bool = True) -> dict:
        """Start a budgeted search: `spec` (JSON) is the base, `space` (YAML or JSON) maps spec fields to ranges
        ({low, high, log}) or {choices}; at most `budget_trials` trials (and `budget_minutes`, 0: no time limit),
        `parallel` at once, losers pruned ('hyperband' or 'successive_halving'); `start_from_plan`: the first trial
        takes the plan's own values of the varied fields, clamped into the space. Every problem is refused before
        anything is queued. Returns the search's name (its trials' group)."""
        try:
            base = parse_json_text(spec) if (spec or "").strip() else {}
            started = search_panel.start(studio, base, space, budget_trials, budget_minutes or None, parallel,
                                         pruner, name, start_from_plan)
        except ValueError as error:
            message = error.as_text() if isinstance(error, SpecError) else f"spec: not valid JSON: {error}"
            raise user_error(message) from None
        return {"name": started}

    def list_searches() -> list[dict]:
        """Your searches (an admin: everyone's), newest first: name, state, owner, budget."""
        return driver.list_searches(studio)

    def search_result(name: str) -> dict:
        """A search's trials (values, status, held-out loss, steps, seconds), every trial's eval curve, the best
        trial and its spec, the parameters' importance and the compute used."""
        return search_panel.result(studio, name)

    def train_search_best(name: str) -> int:
        """Queue the best trial's spec as a job of its own ("Train this"). Returns the job id."""
        return search_panel.train_best(studio, name)

    def cancel_search(name: str) -> str:
        """Stop a search: no more trials; its queued and running trials are cancelled."""
        return search_panel.cancel(studio, name)

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

    def combine_adapters(name: str, adapters: list[str], weights: list[float] | None = None,
                         combination_type: str = "linear", density: float = 0.5, majority_sign_method: str = "total",
                         svd_rank: int = 0, priority: int = 0) -> int:
        """Queue a job that makes the adapter `name` from two or more `adapters` of one base, each with its weight
        (empty: 1.0 each), by PEFT's add_weighted_adapter (`combination_type`: linear, cat, ties, dare_linear,
        dare_ties, magnitude_prune, or an svd type). Returns the job id."""
        return adapters_tab.combine(studio, name, adapters, weights, combination_type, density, majority_sign_method,
                                    svd_rank, priority)

    def download_merged(name: str) -> FileData:
        """The merged model's zip (safetensors, tokenizer, card), once a merge job built it."""
        path = Path(adapters_tab.merged_zip(studio, name))
        return FileData(path=str(path), orig_name=path.name)

    def export_gguf(name: str, quantization: str = "q8_0") -> int:
        """Queue a job that exports the adapter for llama.cpp, Ollama and LM Studio: its merged model as GGUF
        (`quantization` f16, q8_0, or q4_k_m where llama.cpp's quantizer is installed), the LoRA alone as a GGUF
        adapter where llama.cpp takes one, and an Ollama Modelfile. Returns the job id."""
        return adapters_tab.export_gguf(studio, name, quantization)

    def download_gguf(name: str, quantization: str = "q8_0") -> FileData:
        """The GGUF export's zip (model GGUF, LoRA GGUF, Modelfile, README), once an export job built it."""
        path = Path(adapters_tab.gguf_zip(studio, name, quantization))
        return FileData(path=str(path), orig_name=path.name)

    def push_to_hub(name: str, repo_id: str, what: str = "adapter", private: bool = True) -> str:
        """Push the adapter ('adapter') or its merged model ('merged') to a hub repo in your own namespace or one of
        your organisations'; needs your hub token (set_hub_token; admins may use STUDIO_HF_TOKEN)."""
        return adapters_tab.push(studio, name, repo_id, what, private)

    def set_hub_token(token: str) -> dict:
        """Keep your own hub token (encrypted, never shown back) for pushes and hub imports. Returns its status."""
        return adapters_tab.set_hub_token(studio, token)

    def clear_hub_token() -> dict:
        """Forget your hub token. Returns its status."""
        return adapters_tab.clear_hub_token(studio)

    def hub_token_status() -> dict:
        """Whether you keep a hub token (`stored`, `hint`: at most its last 4 characters) and whose token your hub
        calls use (`uses`: yours, the operator's, none)."""
        return adapters_tab.hub_token_status(studio)

    def set_wandb_key(key: str) -> dict:
        """Keep your own Weights & Biases API key (encrypted, never shown back) for runs with report_to wandb; only
        your own jobs' training processes read it. Returns its status."""
        return account_tab.set_wandb_key(studio, key)

    def clear_wandb_key() -> dict:
        """Forget your W&B API key. Returns its status."""
        return account_tab.clear_wandb_key(studio)

    def wandb_key_status() -> dict:
        """Whether you keep a W&B API key (`stored`, `hint`: at most its last 4 characters)."""
        return account_tab.wandb_key_status(studio)

    def create_api_key() -> dict:
        """A new API key for the OpenAI-compatible endpoint (/v1), replacing your old one: `key` is shown this once
        (only its hash is kept), `hint` its last characters."""
        return account_tab.create_api_key(studio)

    def revoke_api_key() -> dict:
        """Revoke your API key (requests with it get 401 from now on). Returns its status."""
        return account_tab.revoke_api_key(studio)

    def import_dataset(file: FileData, name: str = "", format: str = "", columns: str = "") -> str:
        """Import a dataset file (JSONL, JSON, CSV or Parquet) under `name` (default: the file's name). `format`
        (messages, sharegpt, alpaca, preference, unpaired, completion, text) and `columns` (JSON: role -> column)
        override what the studio proposes from the file's columns. Returns what was imported; a refusal lists every
        problem."""
        path = file.get("path") if isinstance(file, dict) else getattr(file, "path", None)
        mapping = datasets_tab.parse_mapping(format, columns)
        try:
            return train_tab.import_upload(studio, path, name or Path(str(path or "")).stem, mapping).dataset.name
        except DatasetError as error:
            raise user_error(error.as_text()) from None

    def import_hub_dataset(hub_id: str, name: str = "", config: str = "", split: str = "train",
                           revision: str = "", format: str = "", columns: str = "") -> str:
        """Import a Hugging Face hub dataset (needs internet; the resolved revision is recorded); `format` and
        `columns` as for import_dataset. Returns a message."""
        return datasets_tab.import_hub(studio, hub_id, name, config, split, revision,
                                       datasets_tab.parse_mapping(format, columns))

    def list_datasets() -> list[dict]:
        """Every stored dataset: name, format, column mapping, rows, sha256, source, created."""
        return datasets_tab.dataset_list(studio)

    def dataset_stats(name: str, base_model: str = DEMO_BASE_MODEL, max_length: int = field_default("max_length"),
                      assistant_only_loss: bool = True) -> dict:
        """A dataset for a base model: rows, tokens, rows longer than max_length, share of tokens carrying loss,
        turns per row, exact duplicates, rows per packed sequence."""
        return datasets_tab.stats_summary(studio, name, base_model, max_length, assistant_only_loss)

    def rename_dataset(name: str, new_name: str) -> str:
        """Rename a dataset (not while a queued or running job uses it). Returns the new name."""
        return datasets_tab.rename(studio, name, new_name)

    def delete_dataset(name: str) -> str:
        """Delete a dataset, its file and its entry together (never while a queued or running job uses it)."""
        datasets_tab.delete(studio, name)
        return f"deleted {name}"

    def compare(prompt: str, adapters: list[str], base_model: str = DEMO_BASE_MODEL, max_new_tokens: int = 64,
                temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, system: str = "", top_k: int = 0,
                repetition_penalty: float = 1.0) -> list[dict]:
        """One prompt to several adapters (and "base") in one batched generate; one reply per adapter."""
        conversations = [conversation(prompt, system=system) for _ in adapters]
        settings = GenerationSettings.from_controls(max_new_tokens, temperature, top_p, seed, top_k, repetition_penalty)
        replies: list[str] = []
        for replies in chat.compare_stream(base_model, adapters, conversations, settings):  # noqa: B007
            pass
        return [{"adapter": name, "reply": reply} for name, reply in zip(adapters, replies, strict=True)]

    def record_vote(base_model: str, prompt: str, answers: list[dict], outcome: str, best: int = -1) -> str:
        """Store a vote judged elsewhere: `answers` [{"adapter", "reply"}] in the order they were shown, `outcome`
        best, tie or all_bad, `best` the winner's index when outcome is best."""
        round_ = {"base": base_model or DEMO_BASE_MODEL, "prompt": conversation(prompt), "settings": {},
                  "order": [a.get("adapter", "") for a in answers], "replies": [a.get("reply", "") for a in answers]}
        return blind_panel.vote(studio, round_, outcome, best if best >= 0 else None)

    def leaderboard(base_model: str = DEMO_BASE_MODEL) -> list[dict]:
        """Blind-vote standings of a base model's adapters: score (Bradley–Terry, Elo scale), win rate, rounds."""
        frame, _ = blind_panel.leaderboard_frame(studio, base_model)
        return frame.to_dict(orient="records")

    def export_votes(base_model: str = DEMO_BASE_MODEL, name: str = "votes", train_dpo: bool = False,
                     start_from: str = "", steps: int = blind_panel.DPO_STEPS, method: str = "dpo") -> str:
        """Store your blind votes on the base model as the data `method` trains on: for dpo, orpo, simpo and reward a
        preference dataset (prompt, chosen, rejected); for kto an unpaired one (prompt, completion, label: winners
        true, every answer of an all-bad vote false). With `train_dpo` (named when DPO was the only method), queue a
        job of `method` on it starting from the adapter `start_from` (empty: a new adapter)."""
        return blind_panel.export_and_train(studio, base_model, name, start_from, steps, train_dpo, method)

    def save_suite(name: str, prompts: str) -> str:
        """Create or replace a prompt suite: one prompt per line, 'prompt => reference answer' where there is one."""
        return suites_panel.save(studio, name, prompts)

    def run_suite(name: str, adapters: list[str], base_model: str = DEMO_BASE_MODEL, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> int:
        """Answer every prompt of the suite with every pane (adapters, adapter@step-N checkpoints, "base"), one
        batched generate per prompt, and score the reference answers. Returns the number of cells stored."""
        settings = GenerationSettings.from_controls(max_new_tokens, temperature, top_p, seed)
        return suites_panel.run(studio, chat, name, base_model, adapters, settings)

    def suite_results(name: str, base_model: str = DEMO_BASE_MODEL) -> dict:
        """The suite's grid on a base: prompts, panes, each pane's answer per prompt, and each pane's mean
        log-likelihood of the reference answers."""
        grid = suites_panel.results(studio, name, base_model)
        return {"prompts": grid.prompts, "panes": grid.panes,
                "answers": [[grid.replies.get((i, pane)) for pane in grid.panes] for i in range(len(grid.prompts))],
                "mean_loglik": {pane: grid.mean_loglik(pane) for pane in grid.panes}}

    def submit_eval(spec: str, priority: int = 0) -> int:
        """Queue an evaluation (spec: JSON text, see docs/api.md): adapters of one base and the base answer an eval
        set, scored per adapter. Returns the job id; a refusal lists every problem."""
        return evaluate_tab.submit(studio, spec, priority)

    def eval_results(job_id: int, rows: int = 50) -> dict:
        """An evaluation's results: the table (one dict per adapter, a value per metric), the best adapter(s) per
        metric, and the first `rows` of the per-row view, most disagreement first."""
        return evaluate_tab.summary(studio, job_id, rows)

    def export_eval(job_id: int, what: str = "table", format: str = "csv") -> str:  # noqa: A002
        """An evaluation's 'table', per-row view ('rows') or every answer ('predictions') as 'csv' or 'json'
        (predictions as json: the JSONL file)."""
        return evaluate_tab.export(studio, job_id, what, format)

    def plan_job(spec: str) -> dict:
        """The step plan of a spec (JSON), as the Train tab shows it: optimizer steps, tokens, sequences per epoch,
        rows that train and that are held out, the values the default rule chose (`chosen`), the plan in words."""
        return api_reads.plan(studio, spec)

    def estimate_memory(spec: str) -> list[dict]:
        """The memory verdict of a spec (JSON) on each device the job may run on (its pool's live workers, or this
        machine): estimated peak, share of the device, fits / tight / does not fit, and the estimate's parts."""
        return api_reads.memory(studio, spec)

    def preview_dataset(spec: str) -> str:
        """The Train tab's preview (Markdown) for a spec's data fields: the train / eval split, what max_length and
        dedup do to the rows, and the first rows as the model sees them."""
        return api_reads.preview(studio, spec)

    def job_script(spec: str) -> dict:
        """A spec (JSON) as the `python -m jobs submit` spec (`cli`) and as a plain TRL script (`script`)."""
        return api_reads.script(studio, spec)

    def compare_runs(job_ids: list[int], sweep: str = "", differences_only: bool = True) -> dict:
        """Runs side by side (at most 12; `sweep` adds every run of that sweep): their specs (`specs`: one row per
        field, the differing ones only when asked) and final metrics ranked by eval loss (`ranking`)."""
        return api_reads.compare_runs(studio, job_ids, sweep, differences_only)

    def job_metrics(job_id: int, names: list[str] | None = None) -> dict:
        """A run's metric series (loss, eval_loss, learning_rate, tokens_per_s, memory_bytes, ...) as [step, value]
        points; every series when `names` is empty."""
        return api_reads.job_metrics(studio, job_id, names or [])

    def sample_answers(job_id: int) -> list[dict]:
        """A run's sample answers: one row per prompt, one column per step (step 0: the base before training)."""
        return api_reads.sample_answers(studio, job_id)

    def base_model_info(base_model: str = DEMO_BASE_MODEL) -> dict:
        """A base model as the Train tab shows it: whether it is prepared (`status`, words; empty for a base with
        nothing to say), the modules LoRA can target (`targets`: presets, then module names) and every module by
        kind (`modules`); `bases`: the bases the form offers."""
        settings, base_model = studio.settings, base_model or DEMO_BASE_MODEL
        roots = allowed_model_roots(list(settings.model_dirs), settings.models_dir)
        if problem := base_model_problem(base_model, roots):  # a folder not theirs is not described at all
            raise user_error(f"base_model: {problem}")
        kinds = base_module_kinds(base_model, settings.models_dir, settings.model_dirs)
        return {"status": train_tab.base_status_text(studio, base_model), "bases": base_models(studio),
                "targets": target_choices(studio, base_model), "modules": kinds or {}}

    def list_suites() -> list[str]:
        """Your prompt suites by name."""
        return suites_panel.suite_names(studio)

    def suite_diff(name: str, before: str, after: str, base_model: str = DEMO_BASE_MODEL) -> str:
        """Each prompt's answer from pane `before` against pane `after` (HTML: removed words struck, added marked)."""
        return api_reads.suite_diff(studio, name, base_model, before, after)

    def list_presets() -> list[str]:
        """Your presets by name, and those an admin shared as owner/name."""
        return presets_panel.preset_names(studio)

    def save_preset(name: str, spec: str) -> str:
        """Save (or replace) your preset `name` from spec fields (JSON), validated like a submission."""
        return presets_panel.save(studio, name, api_reads.spec_fields(spec))

    def load_preset(name: str) -> dict:
        """A preset's spec fields (yours by name, a shared one as owner/name)."""
        return presets_panel.load(studio, name)

    def delete_preset(name: str) -> str:
        """Delete your preset (an admin: anyone's)."""
        presets_panel.delete(studio, name)
        return f"deleted {name}"

    def share_preset(name: str, shared: bool = True) -> str:
        """Share a preset with everyone, or make it private again (admins only)."""
        presets_panel.share(studio, name, shared)
        return f"{name}: {'shared' if shared else 'private'}"

    def my_account() -> dict:
        """Who you are, the disk your datasets take against your limits, your sessions, your hub token's hint."""
        return account_tab.my_account(studio)

    def change_password(current: str, new: str, request: gr.Request) -> str:
        """Set a new password (the current one must match); your other sessions end, this one stays."""
        return account_tab.change_password(studio, gate, current, new, new, request)

    def audit_log(limit: int = account_tab.AUDIT_ROWS) -> list[dict]:
        """The newest audit events: sign-ins, failed sign-ins, account changes, pushes, deletions (admins only)."""
        return account_tab.audit_log(studio, limit)

    endpoints = (submit_job, submit_sweep, cancel_sweep, start_search, list_searches, search_result,
                 train_search_best, cancel_search, get_job, list_jobs, cancel_job, move_job, set_priority,
                 list_workers, list_adapters, download_adapter, rename_adapter, delete_adapter, merge_adapter,
                 combine_adapters, download_merged, export_gguf, download_gguf, push_to_hub, set_hub_token,
                 clear_hub_token, hub_token_status, set_wandb_key, clear_wandb_key, wandb_key_status, compare,
                 import_dataset, import_hub_dataset, list_datasets, dataset_stats, rename_dataset, delete_dataset,
                 record_vote, leaderboard, export_votes, save_suite, run_suite, suite_results, list_suites, suite_diff,
                 submit_eval, eval_results, export_eval, plan_job, base_model_info, estimate_memory,
                 preview_dataset, job_script, compare_runs, job_metrics,
                 sample_answers, list_presets, save_preset, load_preset, delete_preset, share_preset, my_account,
                 change_password, audit_log, create_api_key, revoke_api_key)
    for endpoint in endpoints:
        gr.api(endpoint, api_name=endpoint.__name__)


UI_ACTIONS: dict[str, tuple[str, ...]] = {
    # What each control of the page does, as endpoints ("tab › control": the button's elem_id or text, the field's
    # label; for a view that follows the form, the view it refreshes). tests/app/web/test_parity.py derives the page's
    # controls from the Blocks and fails on one missing here (or from its short list of page-only controls).
    "Train › submit-job": ("submit_job",), "Train › submit-sweep": ("submit_sweep",),
    "Train › field-init_adapter": ("list_adapters",),  # the picker's choices: adapters of the base, reward_model told
    "Train › step-plan": ("plan_job",), "Train › memory-verdict": ("estimate_memory",),
    "Train › show-preview": ("preview_dataset",), "Train › dataset-preview": ("preview_dataset",),
    "Train › Import dataset": ("import_dataset",), "Train › Show as CLI / Python": ("job_script",),
    "Train › Save preset": ("save_preset",), "Train › preset-delete": ("delete_preset",),
    "Train › preset-shared": ("share_preset",), "Train › Load into the form": ("load_preset",),
    "Train › Download preset": ("load_preset",), "Train › base-status": ("base_model_info",),
    "Datasets › dataset-import": ("import_dataset",), "Datasets › Import from the hub": ("import_hub_dataset",),
    "Datasets › dataset-inspect": ("dataset_stats",), "Datasets › dataset-stats": ("dataset_stats",),
    "Datasets › Rename": ("rename_dataset",), "Datasets › dataset-delete": ("delete_dataset",),
    "Runs › compare-picked": ("compare_runs",), "Runs › compare-go": ("compare_runs",),
    "Runs › compare-plot": ("compare_runs",),
    "Runs › move-front": ("move_job",), "Runs › move-up": ("move_job",), "Runs › move-down": ("move_job",),
    "Runs › move-back": ("move_job",), "Runs › Set priority": ("set_priority",),
    "Runs › jobs-table": ("list_jobs", "get_job", "job_metrics"),
    "Runs › run-timeline": ("job_metrics", "sample_answers"), "Runs › Cancel job": ("cancel_job",),
    "Runs › Cancel its whole sweep": ("cancel_sweep",),
    "Train › search-start": ("start_search",), "Runs › search-show": ("search_result",),
    "Runs › search-summary": ("search_result",), "Runs › search-train-best": ("train_search_best",),
    "Runs › search-cancel": ("cancel_search",), "Runs › clone-run": ("get_job",),
    "Adapters › adapter-merge": ("merge_adapter",), "Adapters › Push to the hub": ("push_to_hub",),
    "Adapters › adapter-combine": ("combine_adapters",),
    "Adapters › adapter-export-gguf": ("export_gguf",), "Adapters › gguf-download": ("download_gguf",),
    "Adapters › Rename": ("rename_adapter",), "Adapters › adapter-delete": ("delete_adapter",),
    "Chat › chat-send": ("compare",), "Chat › Refresh adapters": ("list_adapters",),
    "Chat › compare-picker": ("list_adapters",),
    **{f"Chat › vote-{choice}": ("record_vote",) for choice in ("A", "B", "C", "D", "E", "F", "tie", "all-bad")},
    "Chat › leaderboard": ("leaderboard",), "Chat › Export votes as a dataset": ("export_votes",),
    "Chat › dpo-submit": ("export_votes",), "Chat › Save suite": ("save_suite",), "Chat › suite-run": ("run_suite",),
    "Chat › suite-prompts": ("list_suites", "suite_results"),
    "Chat › Diff answers": ("suite_diff",),
    "Evaluate › eval-submit": ("submit_eval",), "Evaluate › eval-refresh": ("list_jobs",),
    "Evaluate › eval-summary": ("eval_results",), "Evaluate › eval-chart": ("eval_results",),
    "Evaluate › eval-download": ("export_eval",),
    "Account › change-password": ("change_password",), "Account › Save token": ("set_hub_token",),
    "Account › Forget token": ("clear_hub_token",), "Account › create-api-key": ("create_api_key",),
    "Account › Save W&B key": ("set_wandb_key",), "Account › Forget W&B key": ("clear_wandb_key",),
    "Account › revoke-api-key": ("revoke_api_key",),
}
