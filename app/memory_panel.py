"""The memory verdict beside the training form: what the chosen job's peak memory is made of, and for each
device a job may run on (each live worker's, or this machine's) whether it fits, is tight, or does not fit.
Recomputed from the form on every change; pure arithmetic, no model is loaded."""

from __future__ import annotations

import gradio as gr

from app.spec_form import SpecForm, live_panel
from jobs.data.store import find_dataset, load_rows
from jobs.models.fits import Device, model_shape, verdicts
from jobs.planning import data_size, job_plan
from jobs.queue.devices import describe_device
from jobs.spec import SpecError, TrainSpec, parse_spec
from jobs.step_plan import estimated_lengths
from jobs.studio import Studio
from storage import workers_repo

MEMORY_FIELDS = ("base_model", "dataset", "method", "init_adapter", "lora_r", "lora_dropout", "target_modules",
                 "lora_bias", "use_dora", "modules_to_save", "quantization", "double_quant", "compute_dtype",
                 "batch_size", "max_length", "packing", "gradient_checkpointing", "optimizer", "pool")
PART_NAMES = {"framework": "runtime (Python, torch, libraries)", "training_runtime": "training runtime",
              "load_retained": "left over from loading", "quantized_weights": "4-bit weights (with their scales)",
              "unquantized_weights": "unquantized parts (embeddings, norms, head)",
              "checkpoint_mmap": "checkpoint file (mapped; counts on CPU)", "lora_params": "LoRA weights",
              "lora_grads": "LoRA gradients", "optimizer_states": "optimizer states",
              "saved_modules": "modules trained in full (copy + gradient)",
              "reference_adapter": "DPO's frozen copy of the starting adapter",
              "activations": "activations (batch × length)", "attention_masks": "attention masks (packed rows)",
              "attention_scores": "attention probabilities (eager attention)",
              "dora_weights": "DoRA with dropout: dequantized weights kept for backward",
              "lm_head_tiles": "LM head and loss", "layer_backward": "a layer's backward",
              "recomputed_layer": "a recomputed layer (checkpointing)",
              "reference_pass": "DPO's reference pass (adapter disabled)",
              "dora_weight_norm": "DoRA's weight norm (one layer)"}
GPU_NOT_MEASURED = ("The GPU figures are estimated, not measured: the GPU profile's constants come from the kernels' "
                    "known behaviour and have not been checked against a GPU run yet (docs/benchmarks.md).")
_longest: dict[tuple[str, str, str], int] = {}
"""The longest sequence per (dataset content, base, method): counted once, not on every change of the form."""


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
    shape = model_shape(spec.base_model, studio.settings.models_dir)
    if shape is None:
        return (f"*Memory: no estimate for `{spec.base_model}` yet: its config is not on this machine (a hub model "
                f"is estimated once downloaded), or it is not a decoder's config.*")
    candidates = devices(studio, spec.pool)
    if not candidates:
        return (f"*Memory: no live worker serves pool `{spec.pool}`, so there is no device to check. The job waits in "
                f"the queue until one starts (`STUDIO_POOL={spec.pool} python -m jobs worker` on a GPU host).*")
    found = verdicts(spec, shape, candidates, longest_sequence(studio, spec))
    lines = ["**Memory verdict** (estimated peak of the training process)", "",
             "| device | memory | peak | share | verdict |", "|---|---|---|---|---|"]
    for verdict in found:
        lines.append(f"| {verdict.device.label}: {verdict.device.name} | {gib(verdict.device.memory_bytes)} | "
                     f"{gib(verdict.estimate.peak)} | {verdict.share:.0%} | **{verdict.word}** |")
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


def longest_sequence(studio: Studio, spec: TrainSpec) -> int:
    """The data's longest sequence in the base's tokens, which bounds a padded batch (DPO's pairs, or rows without
    packing); 0 with packing (every sequence is filled to max_length) or without the dataset. A pair counts its
    prompt with the longer answer: the chosen side is counted (jobs.planning), the rejected one scaled from it by
    characters."""
    if spec.method == "sft" and spec.packing:
        return 0
    dataset = find_dataset(studio, spec.dataset)
    if dataset is None:
        return 0
    key = (dataset.sha256, spec.base_model, spec.method)
    if key not in _longest:
        lengths = data_size(studio, spec).lengths
        if spec.method == "dpo" and lengths:
            rows = load_rows(studio.absolute(dataset.path))
            chosen = estimated_lengths(rows)
            rejected = estimated_lengths([{"prompt": row.get("prompt", []), "chosen": row.get("rejected", [])}
                                          for row in rows])
            lengths = [round(n * max(1.0, r / c)) for n, c, r in zip(lengths, chosen, rejected, strict=False)]
        _longest[key] = max(lengths, default=0)
    return _longest[key]


def build(studio: Studio, form: SpecForm, app: gr.Blocks) -> None:
    live_panel(studio, form, app, MEMORY_FIELDS, verdict_text, "memory-verdict")
