"""Adapters tab: what was trained (rank, targets, dataset, steps, final eval loss), a one-click zip download that
loads anywhere PEFT loads, merge, GGUF export (llama.cpp, Ollama, LM Studio), rename and delete, and a new
adapter combined from several (a job)."""

from __future__ import annotations

import gradio as gr

from app import views
from app.web.errors import audit, user_error
from app.web.safe_text import SafeMarkdown
from jobs import hub_access
from jobs.combine_rules import MAX_RANK, TYPES
from jobs.models.contents import folder_kind
from jobs.models.reward_adapters import is_reward_adapter
from jobs.spec import SpecError
from jobs.studio import Studio
from jobs.submit import submit_combine, submit_export, submit_merge
from jobs.training.registry import AdapterError, delete_adapter, gguf_exports, rename_adapter
from storage import catalog, jobs_repo


# --- handlers (the API calls these too) ---------------------------------------------------------------------
def adapter_list(studio: Studio, base_model: str = "") -> list[dict]:
    with studio.db.read() as session:
        rows = catalog.list_adapters(session, base_model or None)
    return [{"name": a.name, "base_model": a.base_model, "kind": folder_kind(studio.absolute(a.path)),
             "size_bytes": a.size_bytes, "job_id": a.job_id, "created_at": a.created_at.isoformat(),
             "gguf": gguf_exports(studio, a.id),
             # A reward model scores, it does not generate: chat, /v1, merge and GGUF refuse it (reward_adapters).
             "reward_model": is_reward_adapter(studio.absolute(a.path))} for a in rows]


def adapters_frame(studio: Studio):
    with studio.db.read() as session:
        rows = catalog.adapters_with_jobs(session)
        job_ids = [adapter.job_id for adapter, _ in rows if adapter.job_id is not None]
        eval_loss = jobs_repo.latest_metrics(session, job_ids, ("eval_loss",))
    return views.adapters_table(rows, eval_loss, {a.id: gguf_exports(studio, a.id) for a, _ in rows})


def adapter_zip(studio: Studio, name: str) -> str:
    """Build the adapter's zip in the exports folder and return its path."""
    from jobs.training.export import adapter_export

    return str(adapter_export(studio, _adapter(studio, name)))  # the path comes from our own row, never the request


def merge(studio: Studio, name: str, dtype: str = "bfloat16") -> int:
    """Queue a merge of the adapter into a 16-bit copy of its base; returns the job id."""
    try:
        return submit_merge(studio, name, dtype)
    except SpecError as error:
        raise user_error(error.as_text()) from None


def combine(studio: Studio, name: str, adapters: list[str], weights: list[float] | None = None,
            combination_type: str = "linear", density: float = 0.5, majority_sign_method: str = "total",
            svd_rank: int = 0, priority: int = 0) -> int:
    """Queue a job that makes the adapter `name` from `adapters` of one base, weighted, with PEFT's
    add_weighted_adapter; returns the job id. Every problem is refused at once, each naming its field."""
    try:
        return submit_combine(studio, name, list(adapters or []), list(weights or []), combination_type, density,
                              majority_sign_method, svd_rank, priority)
    except SpecError as error:
        raise user_error(error.as_text()) from None


def parse_weights(text: str) -> list:
    """The form's weights ("0.7, 0.3"): numbers, and what is not one kept as typed, for the check to name."""
    weights = []
    for part in (text or "").replace(";", ",").split(","):
        if part.strip():
            try:
                weights.append(float(part))
            except ValueError:
                weights.append(part.strip()[:40])
    return weights


def merged_zip(studio: Studio, name: str) -> str:
    from jobs.training.export import merged_export

    if (zipped := merged_export(studio, _adapter(studio, name))) is None:
        raise user_error(f"name: '{name}' has no merged model yet; ask for one with Merge (it runs as a job)")
    return str(zipped)


def export_gguf(studio: Studio, name: str, quantization: str = "q8_0") -> int:
    """Queue a GGUF export of the adapter (merged model, LoRA adapter, Ollama Modelfile); returns the job id."""
    from jobs.training.gguf import unavailable

    if why := unavailable(quantization):
        raise user_error(why)
    try:
        return submit_export(studio, name, quantization)
    except SpecError as error:
        raise user_error(error.as_text()) from None


def gguf_zip(studio: Studio, name: str, quantization: str = "q8_0") -> str:
    from jobs.training.export import gguf_export

    if (zipped := gguf_export(studio, _adapter(studio, name), quantization)) is None:
        raise user_error(f"quantization: '{name}' has no {quantization} GGUF yet; ask for one with Export GGUF "
                         "(it runs as a job)")
    return str(zipped)


def quantization_choices() -> list[tuple[str, str]]:
    """The GGUF types offered; q4_k_m says why it is unavailable where llama.cpp's quantizer is missing."""
    from jobs.training.gguf import QUANTIZATIONS, quantizer_problem

    missing = quantizer_problem()
    return [(f"{q} (unavailable here: {missing})" if q == "q4_k_m" and missing else q, q) for q in QUANTIZATIONS]


def push(studio: Studio, name: str, repo_id: str, what: str = "adapter", private: bool = True) -> str:
    """Push the adapter (or its merged model) to the hub; returns the repo URL."""
    from jobs.training.hub import HubError, push_folder

    adapter = _adapter(studio, name)
    if what not in ("adapter", "merged"):
        raise user_error(f"what: push 'adapter' or 'merged', not '{what}'")
    if what == "merged" and not adapter.merged_path:
        raise user_error(f"what: '{name}' has no merged model yet; merge it first")
    folder = studio.absolute(adapter.merged_path if what == "merged" else adapter.path)
    try:
        return push_folder(studio, folder, (repo_id or "").strip(), private=bool(private))
    except HubError as error:
        raise user_error(str(error)) from None


def hub_token_status(studio: Studio) -> dict:
    """Whether I keep a hub token (`hint`: at most its last 4 characters) and whose token my pushes would use."""
    return hub_access.hub_token_status(studio)


def set_hub_token(studio: Studio, token: str) -> dict:
    """Keep my own hub token (encrypted; never shown back) for pushes and hub imports."""
    try:
        return hub_access.set_hub_token(studio, token)
    except hub_access.HubTokenError as error:
        raise user_error(str(error)) from None


def clear_hub_token(studio: Studio) -> dict:
    try:
        return hub_access.clear_hub_token(studio)
    except hub_access.HubTokenError as error:
        raise user_error(str(error)) from None


def _adapter(studio: Studio, name: str):
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, (name or "").strip())
    if adapter is None:
        raise user_error(f"name: no adapter named '{name}'")
    return adapter


def rename(studio: Studio, name: str, new_name: str) -> str:
    try:
        return rename_adapter(studio, (name or "").strip(), new_name).name
    except AdapterError as error:
        raise user_error(str(error)) from None


def delete(studio: Studio, name: str) -> None:
    try:
        delete_adapter(studio, (name or "").strip())
    except AdapterError as error:
        raise user_error(str(error)) from None
    audit(studio, "adapter_delete", name)


# --- layout -------------------------------------------------------------------------------------------------
def build(studio: Studio, tab: gr.Tab, app: gr.Blocks) -> None:
    table = gr.Dataframe(interactive=False, label="Adapters (click a row to pick it)", elem_id="adapters-table",
                         wrap=True)
    with gr.Row():
        picked = gr.Textbox(label="Adapter", placeholder="click a row", elem_id="adapter-name", scale=2)
        download = gr.DownloadButton("Download zip", value=None, variant="primary", elem_id="adapter-download",
                                     interactive=False, scale=1)
    with gr.Row():
        new_name = gr.Textbox(label="New name", placeholder="letters, digits, - _ .", elem_id="adapter-new-name",
                              scale=2)
        rename_button = gr.Button("Rename", scale=1)
        delete_button = gr.Button("Delete adapter", variant="stop", scale=1, elem_id="adapter-delete")
    with gr.Accordion("Merged model and the hub", open=False), gr.Row():
        dtype = gr.Dropdown(["bfloat16", "float16", "float32"], value="bfloat16", label="Merged dtype", scale=1)
        merge_button = gr.Button("Merge into its base (a job)", scale=1, elem_id="adapter-merge")
        merged_download = gr.DownloadButton("Download merged zip", value=None, interactive=False, scale=1,
                                            elem_id="merged-download")
        repo_id = gr.Textbox(label="Hub repo (owner/name)", scale=2)
        what = gr.Radio(["adapter", "merged"], value="adapter", label="Push", scale=1)
        push_button = gr.Button("Push to the hub", scale=1)
    with gr.Accordion("Combine adapters into a new one (a job)", open=False):
        with gr.Row():
            combined_name = gr.Textbox(label="New adapter's name", elem_id="combine-name", scale=2)
            parents = gr.Dropdown([], multiselect=True, label="Adapters to combine (two or more, one base)", scale=3,
                                  elem_id="combine-adapters")
            weights = gr.Textbox(label="Weights", placeholder="one per adapter, e.g. 0.7, 0.3 (empty: 1 each)",
                                 elem_id="combine-weights", scale=2)
        with gr.Row():
            combination_type = gr.Dropdown(list(TYPES), value="linear", label="Combination (PEFT)", scale=2,
                                           info="linear, ties, dare_*: one rank; cat: ranks add up; *svd: any ranks")
            density = gr.Slider(0.01, 1.0, value=0.5, step=0.01, label="Density (ties, dare, magnitude_prune)",
                                scale=2)
            sign = gr.Radio(["total", "frequency"], value="total", label="Majority sign (ties)", scale=1)
            svd_rank = gr.Number(0, precision=0, minimum=0, maximum=MAX_RANK, label="SVD rank (0: largest)",
                                 scale=1)
            combine_button = gr.Button("Combine (a job)", scale=1, elem_id="adapter-combine")
    with gr.Accordion("GGUF for llama.cpp, Ollama and LM Studio", open=False), gr.Row():
        quantization = gr.Dropdown(quantization_choices(), value="q8_0", label="GGUF type", scale=2,
                                   elem_id="gguf-quantization")
        export_button = gr.Button("Export GGUF (a job)", scale=1, elem_id="adapter-export-gguf")
        gguf_download = gr.DownloadButton("Download GGUF zip", value=None, interactive=False, scale=1,
                                          elem_id="gguf-download")
    status = SafeMarkdown(elem_id="adapter-status")

    def show_table():
        return adapters_frame(studio)

    def offer_parents(chosen):
        names = [row["name"] for row in adapter_list(studio)]
        return gr.update(choices=names, value=[name for name in chosen or [] if name in names])

    def on_combine(name, chosen, weights_text, kind, keep, sign_method, rank):
        job_id = combine(studio, name, chosen, parse_weights(weights_text), kind, keep, sign_method, int(rank or 0))
        return f"Queued combine job **{job_id}** for **{(name or '').strip()}**; follow it in the Runs tab."

    def gguf_button(name, wanted):
        adapter = _adapter(studio, name) if name else None
        ready = adapter is not None and wanted in gguf_exports(studio, adapter.id)
        return gr.update(value=gguf_zip(studio, name, wanted) if ready else None, interactive=ready,
                         label=f"Download {name}-gguf-{wanted}.zip" if ready else f"No {wanted} GGUF yet")

    def on_select(event: gr.SelectData, wanted):
        name = event.row_value[0]
        # The zips are built when the row is picked, so each download is one click.
        merged = _adapter(studio, name).merged_path
        return (name, gr.update(value=adapter_zip(studio, name), label=f"Download {name}.zip", interactive=True),
                gr.update(value=merged_zip(studio, name) if merged else None, interactive=bool(merged),
                          label=f"Download {name}-merged.zip" if merged else "Download merged zip"),
                gguf_button(name, wanted))

    def on_export(name, wanted):
        job_id = export_gguf(studio, name, wanted)
        return (f"Queued GGUF export job **{job_id}** ({wanted}) for **{name}**; follow it in the Runs tab, then "
                "pick the row again.")

    def on_merge(name, wanted_dtype):
        job_id = merge(studio, name, wanted_dtype)
        return f"Queued merge job **{job_id}** for **{name}**; follow it in the Runs tab, then pick the row again."

    def on_push(name, repo, kind):
        return f"Pushed **{name}** ({kind}) to {push(studio, name, repo, kind)}."

    def on_rename(name, wanted):
        renamed = rename(studio, name, wanted)
        return (f"Renamed **{name}** to **{renamed}**.", show_table(), renamed, "",
                gr.update(value=adapter_zip(studio, renamed), label=f"Download {renamed}.zip"))

    def on_delete(name):
        delete(studio, name)
        return (f"Deleted **{name}** (its files and its entry).", show_table(), "",
                gr.update(value=None, label="Download zip", interactive=False))

    private = dict(api_visibility="private")
    for trigger in (tab.select, app.load):
        trigger(show_table, None, table, **private)
        trigger(offer_parents, parents, parents, **private)
    combine_button.click(on_combine, [combined_name, parents, weights, combination_type, density, sign, svd_rank],
                         status, **private)
    table.select(on_select, quantization, [picked, download, merged_download, gguf_download], **private)
    quantization.change(gguf_button, [picked, quantization], gguf_download, **private)
    export_button.click(on_export, [picked, quantization], status, **private)
    merge_button.click(on_merge, [picked, dtype], status, **private)
    push_button.click(on_push, [picked, repo_id, what], status, **private)
    rename_button.click(on_rename, [picked, new_name], [status, table, picked, new_name, download], **private)
    delete_button.click(on_delete, picked, [status, table, picked, download], **private)
