"""The memory verdict beside the training form: what the chosen job's peak memory is made of, and for each
device a job may run on (each live worker's, or this machine's) whether it fits, is tight, or does not fit.
Recomputed from the form on every change; pure arithmetic, no model is loaded."""

from __future__ import annotations

import gradio as gr

from app.train.spec_form import SpecForm, live_panel
from jobs.models.fits import Device, model_shape, verdicts
from jobs.planning import job_plan, longest_sequence
from jobs.queue.devices import describe_device
from jobs.run_settings.lora import LoraSettings, read_adapter_lora
from jobs.spec import SpecError, TrainSpec, parse_spec
from jobs.studio import Studio
from storage import catalog, workers_repo

MEMORY_FIELDS = ("base_model", "dataset", "method", "init_adapter", "lora_r", "lora_dropout", "target_modules",
                 "lora_bias", "use_dora", "modules_to_save", "quantization", "double_quant", "compute_dtype",
                 "batch_size", "max_length", "packing", "gradient_checkpointing", "optimizer", "pool", "devices")
PART_NAMES = {"framework": "runtime (Python, torch, libraries)", "training_runtime": "training runtime",
              "load_retained": "left over from loading", "quantized_weights": "4-bit weights (with their scales)",
              "unquantized_weights": "unquantized parts (embeddings, norms, head)",
              "checkpoint_mmap": "checkpoint file (mapped; counts on CPU)", "lora_params": "LoRA weights",
              "lora_grads": "LoRA gradients", "optimizer_states": "optimizer states",
              "saved_modules": "modules trained in full (copy + gradient)",
              "reference_adapter": "the reference: a frozen copy of the starting adapter (DPO, KTO)",
              "activations": "activations (batch × length)", "attention_masks": "attention masks (packed rows)",
              "attention_scores": "attention probabilities (eager attention)",
              "dora_weights": "DoRA with dropout: dequantized weights kept for backward",
              "lm_head_tiles": "LM head and loss", "layer_backward": "a layer's backward",
              "recomputed_layer": "a recomputed layer (checkpointing)",
              "reference_pass": "the reference pass (DPO, KTO; adapter disabled)",
              "dora_weight_norm": "DoRA's weight norm (one layer)"}
GPU_NOT_MEASURED = ("The GPU figures are estimated, not measured: the GPU profile's constants come from the kernels' "
                    "known behaviour and have not been checked against a GPU run yet (docs/benchmarks.md).")


def devices(studio: Studio, pool: str = "") -> list[Device]:
    """The devices a job may run on: live workers of its pool (any worker when it names none). Empty when it names a
    pool no live worker serves; with no worker at all (the app before its worker registers), this machine."""
    with studio.db.read() as session:
        workers = workers_repo.live_workers(session, studio.settings.lease_s)
    if pool:
        workers = [w for w in workers if w.pool == pool]
    if workers or pool:
        return [Device(f"{w.host} {w.device}", w.device_name, w.memory_bytes) for w in workers]
    name, memory = describe_device()
    return [Device("this machine (no worker has registered)", name, memory)]


def gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def verdict_text(studio: Studio, raw: dict) -> str:
    try:
        spec = job_plan(studio, parse_spec(raw)).spec  # an empty batch size is chosen for the data first
    except SpecError:
        return "*Memory: fix the form's problems to see the estimate.*"
    shape = model_shape(spec.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    if shape is None:
        return (f"*Memory: no estimate for `{spec.base_model}` yet: its config is not on this machine (a hub model "
                f"is estimated once downloaded), or it is not a decoder's config.*")
    candidates = devices(studio, spec.pool)
    if not candidates:
        return (f"*Memory: no live worker serves pool `{spec.pool}`, so there is no device to check. The job waits in "
                f"the queue until one starts (`STUDIO_POOL={spec.pool} python -m jobs worker` on a GPU host).*")
    found = verdicts(spec, shape, candidates, longest_sequence(studio, spec), start_adapter(studio, spec))
    lines = ["**Memory verdict** (estimated peak of the training process)", "",
             "| device | memory | peak | share | verdict |", "|---|---|---|---|---|"]
    for verdict in found:
        lines.append(f"| {verdict.device.label}: {verdict.device.name} | {gib(verdict.device.memory_bytes)} | "
                     f"{gib(verdict.peak)} | {verdict.share:.0%} | **{verdict.word}** |")
    if spec.devices > 1:
        lines += ["", f"*{spec.devices} devices: each GPU holds one rank's peak (the whole 4-bit base and its own "
                  f"batch); on a CPU the {spec.devices} ranks share its memory, so its peak is {spec.devices} times "
                  f"one rank's.*"]
    first = found[0].estimate
    lines += ["", f"<details><summary>What the {gib(first.peak)} on {found[0].device.name} is made of</summary>", "",
              "| part | size |", "|---|---|"]
    lines += [f"| {PART_NAMES.get(name, name)} | {gib(size)} |" for name, size in first.breakdown().items() if size]
    lines += ["", "Dynamic parts include the allocator's overhead; batch × length is the most packing can put in a "
              "row, and a padded batch is as long as the data's longest sequence. Measured against real peaks in "
              "docs/benchmarks.md.</details>"]
    if any(not verdict.device.name.startswith("CPU") for verdict in found):
        lines += ["", f"*{GPU_NOT_MEASURED}*"]
    return "\n".join(lines)


def start_adapter(studio: Studio, spec: TrainSpec) -> LoraSettings | None:
    """The LoRA of the adapter the job continues, which trains instead of the form's LoRA fields (None: a new one,
    or an adapter this person cannot see, which submit refuses)."""
    if not spec.init_adapter:
        return None
    with studio.db.read() as session:
        adapter = catalog.get_adapter_by_name(session, spec.init_adapter)
    try:
        return read_adapter_lora(studio.absolute(adapter.path)) if adapter else None
    except (OSError, ValueError):
        return None


def build(studio: Studio, form: SpecForm, app: gr.Blocks) -> None:
    live_panel(studio, form, app, MEMORY_FIELDS, verdict_text, "memory-verdict")
