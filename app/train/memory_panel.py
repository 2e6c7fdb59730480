"""The memory verdict beside the training form: what the chosen job's peak memory is made of, and for each
device a job may run on (each live worker's, or this machine's) whether it fits, is tight, or does not fit.
Recomputed from the form on every change; pure arithmetic, no model is loaded."""

from __future__ import annotations

import gradio as gr

from app.train.spec_form import SpecForm, live_panel
from jobs.models.budget import start_adapter
from jobs.models.fits import Verdict, gang_problem, model_shape, verdicts
from jobs.planning import longest_sequence
from jobs.queue.devices import job_devices
from jobs.spec import ALL_DEVICES, SpecError, parse_spec
from jobs.studio import Studio
from jobs.submit import planned_job

MEMORY_FIELDS = ("base_model", "dataset", "method", "init_adapter", "lora_r", "lora_dropout", "target_modules",
                 "lora_bias", "use_dora", "modules_to_save", "quantization", "double_quant", "compute_dtype",
                 "batch_size", "grad_accum", "max_length", "packing", "gradient_checkpointing", "optimizer", "pool",
                 "devices", "memory_budget_gib", "grpo_rewards")
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
              "dora_weight_norm": "DoRA's weight norm (one layer)",
              "reward_model": "the reward model: a second copy of the base with the reward adapter (GRPO)",
              "reward_pass": "the reward model scoring the answers (GRPO)"}
GPU_NOT_MEASURED = ("The GPU figures are estimated, not measured: the GPU profile's constants come from the kernels' "
                    "known behaviour and have not been checked against a GPU run yet (docs/benchmarks.md).")


def gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def verdict_text(studio: Studio, raw: dict) -> str:
    try:
        planned = planned_job(studio, parse_spec(raw))  # an empty batch size is chosen for the data first
        spec = planned.spec
    except SpecError:
        return "*Memory: fix the form's problems to see the estimate.*"
    shape = model_shape(spec.base_model, studio.settings.models_dir, studio.settings.model_dirs)
    if shape is None:
        return (f"*Memory: no estimate for `{spec.base_model}` yet: its config is not on this machine (a hub model "
                f"is estimated once downloaded), or it is not a decoder's config.*")
    candidates = job_devices(studio, spec.pool, spec.devices)
    if not candidates and spec.pool and not job_devices(studio, spec.pool):
        return (f"*Memory: no live worker serves pool `{spec.pool}`, so there is no device to check. The job waits in "
                f"the queue until one starts (`STUDIO_POOL={spec.pool} python -m jobs worker` on a GPU host).*")
    if not candidates:
        return (f"*Memory: no live worker {f'of pool `{spec.pool}` ' if spec.pool else ''}can run {spec.devices} "
                f"devices, so there is no device to check (the `devices` field says why).*")
    found = verdicts(spec, shape, candidates, longest_sequence(studio, spec), start_adapter(studio, spec))
    budget = [planned.memory.sentence(), ""] if planned.memory else []  # the same levers the peaks below are for
    ranks = spec.devices > 1
    lines = ["**Memory verdict** (estimated peak of the training process)", "", *budget,
             f"| device |{' ranks here |' if ranks else ''} free for a job | peak | share | verdict |",
             f"|---|{'---|' if ranks else ''}---|---|---|---|"]
    for verdict in found:
        here = f" {verdict.device.ranks or spec.devices} |" if ranks else ""
        lines.append(f"| {verdict.device.label}: {verdict.device.name} |{here} {gib(verdict.device.memory_bytes)} | "
                     f"{gib(verdict.peak)} | {verdict.share:.0%} | **{verdict.word}** |")
    if ranks:
        lines += ["", _ranks_note(spec, raw, found)]
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


def _ranks_note(spec, raw: dict, found: list[Verdict]) -> str:
    """What the rows mean for a several-device job: one host's ranks, a gang's nodes (and whether enough hold one), or
    both where the pool has hosts of each kind."""
    notes = []
    if any(verdict.device.nodes == 1 for verdict in found):
        every = " ('all': the most one host that may take the job has)" if raw.get("devices") == ALL_DEVICES else ""
        notes.append(f"*{spec.devices} devices{every} on one host: each GPU holds one rank's peak (the whole 4-bit "
                     f"base and its own batch); on a CPU the {spec.devices} ranks share its memory, so its peak is "
                     f"{spec.devices} times one rank's.*")
    gang = [verdict for verdict in found if verdict.device.nodes > 1]
    if gang:
        nodes = gang[0].device.nodes
        per_host = spec.devices // nodes
        fitting = len({verdict.device.host for verdict in gang if verdict.share <= 1})
        count = (f" {fitting} of these {len({verdict.device.host for verdict in gang})} hosts can hold a node; the "
                 f"job needs {nodes}." if len(gang) == len(found) else "")
        notes.append(f"*{'Or ' if notes else ''}{spec.devices} devices as a gang of {nodes} nodes × {per_host} "
                     f"rank{'s' if per_host > 1 else ''}, "
                     f"one node per host of pool `{spec.pool}`: the rows with {per_host} ranks here are workers that "
                     f"may be one of its nodes. Each GPU holds one rank's peak; on a CPU a node's {per_host} ranks "
                     f"share its memory, so its peak is {per_host} times one rank's.{count}*")
    if problem := gang_problem(found):
        notes.append(f"**It cannot run:** {problem}.")
    return "\n\n".join(notes)


def build(studio: Studio, form: SpecForm, app: gr.Blocks) -> None:
    live_panel(studio, form, app, MEMORY_FIELDS, verdict_text, "memory-verdict")
