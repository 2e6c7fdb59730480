"""What every training run prepares before its trainer, SFT (jobs.training.train) and DPO (jobs.training.preference)
alike: the run settings for this machine, the 4-bit base with its LoRA, the rows and their split, the step plan, the
callbacks every run reports through, and the trainer arguments they share. Each method builds its own trainer from
these."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import transformers
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

from jobs.data.mixing import mixed, taken_words, with_system_prompt
from jobs.data.stats import tokenize_row
from jobs.data.store import load_rows, split_sizes
from jobs.models.budget import fit
from jobs.models.fits import Device
from jobs.models.loading import keep_4bit_layout, machine, pick_device, release_loading_memory
from jobs.models.memory_inputs import ModelShape
from jobs.run_settings.allocator import JEMALLOC_LABEL, allocator_in_use
from jobs.run_settings.cores import usable_cores
from jobs.run_settings.cpu_dtype import NATIVE_BF16_LABEL, native_bf16
from jobs.run_settings.data import DataSettings
from jobs.run_settings.lora import read_adapter_lora
from jobs.run_settings.settings import Base, RunSettings, resolve
from jobs.run_settings.tracking import tracking_environment
from jobs.spec import PLAIN_INITS, REWARD_METHOD, TrainSpec
from jobs.step_plan import AUTO_FIELDS, DataSize, StepPlan, pack_length_problem, plan
from jobs.training.best import BestAdapterCallback
from jobs.training.callbacks import CompleteMarkerCallback, MetricsCallback, MetricsSink, StopCallback
from jobs.training.distributed import is_main, local_device, threads_per_rank
from jobs.training.lm_head import score_only_labelled_positions
from jobs.training.lora_init import start_adapter
from jobs.training.phases import phase
from jobs.training.run_dtype import began_in, record
from jobs.training.whole_model import make_trainable


def attach_lora(model, settings: RunSettings, init_adapter: Path | None = None, out_dir: Path | None = None,
                base_model: str | None = None):
    """The LoRA the settings say, trainable: a new one, or the adapter in `init_adapter` (its own rank and
    targets, which the settings read from it). A start that reads the base (PiSSA, OLoRA, LoftQ: jobs.training.
    lora_init) needs the run folder `out_dir` and the base's folder `base_model`."""
    if settings.whole_model:  # full or freeze: the base's own weights train, no adapter
        trained = make_trainable(model, settings)
        print(f"{settings.finetuning} fine-tuning: {len(trained)} weight tensors train", flush=True)
        return model
    if settings.quantized:
        loaded = {name: param.dtype for name, param in model.named_parameters()}
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing)
        if not settings.upcasts_unquantized:
            undo_upcast(model, loaded)
    if init_adapter is not None:
        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    transformers.set_seed(settings.seed)  # LoRA init is random: same seed, same adapter start (and resume)
    model = get_peft_model(model, lora_config(settings))
    if settings.lora.init not in PLAIN_INITS:
        if out_dir is None or base_model is None:
            raise ValueError(f"a '{settings.lora.init}' start needs the run folder and the base's folder")
        start_adapter(model, settings, out_dir, base_model)
    return model


def undo_upcast(model, loaded: dict[str, torch.dtype]) -> None:
    """The weights prepare_model_for_kbit_training cast to fp32 back in the dtype they loaded in
    (RunSettings.upcasts_unquantized says when)."""
    for name, param in model.named_parameters():
        if param.dtype != loaded[name]:
            param.data = param.data.to(loaded[name])


def lora_config(settings: RunSettings) -> LoraConfig:
    return LoraConfig(**settings.lora.peft_kwargs())


def load_base(settings: RunSettings, base_model: str):
    """The frozen base, loaded and quantized as the settings say."""
    quantization = settings.quantization_kwargs()
    # A reward model is the base as a sequence classifier with one output (a new score head on the last token).
    auto, head = ((AutoModelForSequenceClassification, {"num_labels": 1}) if settings.method == REWARD_METHOD
                  else (AutoModelForCausalLM, {}))
    model = auto.from_pretrained(
        base_model, quantization_config=BitsAndBytesConfig(**quantization) if quantization else None,
        dtype=getattr(torch, settings.weights_dtype), device_map={"": local_device(settings.device)},
        use_safetensors=True, trust_remote_code=False, **head, **settings.model_kwargs())
    if settings.releases_checkpoint:
        release_loading_memory(model)
    keep_4bit_layout(model)  # evals and samples during training must not cut the gradient's path
    return model


def split_dataset(rows: list[dict], eval_fraction: float, seed: int,
                  eval_rows: list[dict] | None = None) -> tuple[Dataset, Dataset | None]:
    """(train, eval): a validation dataset's rows when given (every row trains), else a seeded random
    eval_fraction held out."""
    dataset = Dataset.from_list(rows)
    if eval_rows:
        return dataset, Dataset.from_list(eval_rows)
    _, eval_rows = split_sizes(len(rows), eval_fraction)
    if eval_rows == 0:
        return dataset, None
    parts = dataset.train_test_split(test_size=eval_rows, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def trainer_args(settings: RunSettings, spec: TrainSpec, out_dir: Path, has_eval: bool) -> dict:
    """What SFT and DPO runs share: the settings' Trainer arguments, and where the studio writes, evaluates and
    saves."""
    tracking_environment(settings.report_to, out_dir)
    return dict(
        **settings.trainer_kwargs(), output_dir=str(out_dir / "checkpoints"), logging_first_step=True,
        run_name=out_dir.name,
        eval_strategy="steps" if has_eval else "no", save_strategy="steps", save_steps=spec.save_steps,
        disable_tqdm=True)


def keep_lora_in_fp32(model, settings: RunSettings) -> None:
    """SFTTrainer casts LoRA weights of quantized models to bf16: back to fp32 where the run computes in fp32."""
    if not settings.keep_lora_fp32:
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


@dataclass
class PreparedRun:
    """Everything `train` builds before the first step: what tests inspect (the collator's labels, the model)."""

    trainer: transformers.Trainer
    """SFTTrainer, or the preference method's TRL trainer (jobs.training.preference)."""
    tokenizer: object
    stop: StopCallback
    has_eval: bool
    spec: TrainSpec
    """The spec as run: with the rule's choices where a direct caller left fields empty."""
    settings: RunSettings
    """What the run trains with on this machine (jobs.run_settings)."""


def rows_plan(spec: TrainSpec, base_model: str, rows: list[dict], tokenizer) -> StepPlan:
    """The step plan (jobs.step_plan) of `spec` over these rows, counted with the base's tokenizer."""
    lengths = [len(tokenize_row(tokenizer, row, False).ids) for row in rows]
    config = Path(base_model) / "config.json"
    params = ModelShape.from_dir(base_model).total_params if config.is_file() else None
    return plan(spec, DataSize(lengths=lengths, counted=True), params)


def planned(spec: TrainSpec, base_model: str, rows: list[dict], tokenizer,
            init_adapter: Path | None = None) -> TrainSpec:
    """A spec through `jobs.submit` arrives with its defaults chosen at submit; a direct caller's (tests, bench, a
    script) empty fields are chosen here by the same rule, from the rows it trains on, and with memory_budget_gib the
    levers it left to the studio by the same fit as submit's (jobs.models.budget) for this machine. A budget nothing
    fits is refused here as submit refuses it."""
    budgeted = spec.memory_budget_gib is not None and (spec.batch_size is None or spec.pack_length is None or
                                                       spec.gradient_checkpointing == "auto")
    if all(getattr(spec, name) is not None for name in AUTO_FIELDS) and not budgeted:
        return spec
    chosen = rows_plan(spec, base_model, rows, tokenizer).spec
    if not budgeted or not (Path(base_model) / "config.json").is_file():
        return chosen
    # A padded batch is as long as its longest row; a packed one may train in passes no shorter than it.
    lengths = [len(tokenize_row(tokenizer, row, False).ids) for row in rows]
    adapter = read_adapter_lora(init_adapter) if init_adapter is not None else None
    chosen, memory, _ = fit(spec, chosen, ModelShape.from_dir(base_model), [this_device()], max(lengths, default=0),
                            adapter)
    if (problem := memory.problem()) is not None:
        raise ValueError(f"memory_budget_gib: {problem}")
    print(memory.sentence(), flush=True)
    return chosen


def this_device() -> Device:
    """This machine as the memory fit sees a worker's device (jobs.queue.devices names it the same way): a CPU by
    its cores, whether it multiplies bf16 natively and whether this process runs with jemalloc, else the GPU
    training will use."""
    if pick_device() == "cpu":
        native = f", {NATIVE_BF16_LABEL}" if native_bf16() else ""
        malloc = f", {JEMALLOC_LABEL}" if allocator_in_use() == "jemalloc" else ""
        return Device("this machine", f"CPU ({usable_cores()} cores{native}{malloc})", 0)
    return Device("this machine", torch.cuda.get_device_name(), torch.cuda.mem_get_info()[0])


DatasetFiles = Path | dict[str, Path]
"""The stored file a run trains on, or, for a mix, each dataset's file by its name."""


def run_rows(spec: TrainSpec, files: DatasetFiles) -> list[dict]:
    """The rows the run trains on (before dedup, drop and the eval split): the datasets mixed by ratio within the row
    budget, seeded (jobs.data.mixing; the log says what came from each), with the default system prompt added."""
    data = DataSettings.from_spec(spec)
    if not isinstance(files, dict):
        files = {data.mix[0][0]: files} if len(data.mix) == 1 else {}
    if missing := [name for name, _ in data.mix if name not in files]:
        raise ValueError(f"no file given for the mix's dataset(s) {', '.join(missing)}")
    rows = load_rows(files[data.mix[0][0]]) if not data.mixes else None
    if rows is None:
        rows, taken = mixed(data.mix, data.max_rows, data.seed, {name: load_rows(files[name]) for name, _ in data.mix})
        # The rows' fingerprint: a resumed attempt (or a rerun) can be seen to train on the very same rows.
        digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
        print(f"mixed {len(rows):,} rows: {taken_words(taken)} (rows sha256 {digest})", flush=True)
    if data.system_prompt:
        rows = [with_system_prompt(row, data.system_prompt) for row in rows]
    return rows


def select_rows(rows: list[dict], spec: TrainSpec, tokenizer) -> list[dict]:
    """The rows the run trains on: exact duplicates removed and over-long rows dropped, when the spec says so."""
    if spec.dedup:
        unique = list({json.dumps(row, sort_keys=True): row for row in rows}.values())
        print(f"dropped {len(rows) - len(unique)} exact duplicate rows", flush=True)
        rows = unique
    if spec.overlong == "drop":
        kept = [row for row in rows if len(tokenize_row(tokenizer, row, False).ids) <= spec.max_length]
        print(f"dropped {len(rows) - len(kept)} rows longer than max_length {spec.max_length}", flush=True)
        rows = kept
    if not rows:
        raise ValueError("no rows left to train on after dropping duplicates and over-long rows")
    return rows


def check_pack_length(spec: TrainSpec, rows: list[dict], tokenizer) -> None:
    """Refuse a row that packing in shorter forward passes would cut, by the rule submit applies to the pinned data
    (jobs.step_plan.pack_length_problem), here on the rows the run trains on: a direct caller may skip submit."""
    longest = max((len(tokenize_row(tokenizer, row, False).ids) for row in rows), default=0)
    if problem := pack_length_problem(spec, longest):
        raise ValueError(f"pack_length {spec.pack_length}: {problem}")


def run_callbacks(spec: TrainSpec, out_dir: Path, on_metrics: MetricsSink, stop: StopCallback,
                  has_eval: bool) -> list:
    """What every run reports and obeys: metrics, stop requests, checkpoint markers; with an eval split, the best
    adapter and early stopping."""
    callbacks = [MetricsCallback(on_metrics), stop]
    keep_best = spec.keep_best and spec.finetuning == "lora"  # a whole model is not copied at every better eval
    if has_eval and (keep_best or spec.early_stopping_patience):
        callbacks.append(BestAdapterCallback(out_dir, spec.early_stopping_patience, keep_best))
    return [*callbacks, CompleteMarkerCallback()]  # last: a checkpoint is complete once all wrote into it


def settings_here(spec: TrainSpec, out_dir: Path, base_model: str, init_adapter: Path | None = None) -> RunSettings:
    """What a run of `spec` in `out_dir` trains with on this machine (jobs.run_settings): a resumed run keeps the
    dtype it began in; a continued adapter trains with its own LoRA. The child's memory estimate reads the same."""
    here = machine()
    here = replace(here, began_in=began_in(out_dir, here.device))
    adapter = read_adapter_lora(init_adapter) if init_adapter is not None else None
    return resolve(spec, Base.from_dir(base_model), here, adapter)


def setup_device(spec: TrainSpec, out_dir: Path, base_model: str, init_adapter: Path | None = None) -> RunSettings:
    """The settings this attempt trains with here (a resumed run keeps the dtype it began in), recorded in the run
    folder; the process set up for them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = settings_here(spec, out_dir, base_model, init_adapter)
    if is_main():  # the ranks of one run share its folder: one writer
        record(out_dir, settings.device, settings.compute_dtype)
    if settings.device == "cpu":
        # accelerate's launcher may have left it at one; ranks on one CPU share its cores
        torch.set_num_threads(threads_per_rank())
        score_only_labelled_positions()
    transformers.set_seed(spec.seed)
    return settings


def _method_words(settings: RunSettings) -> str:
    """The preference method and its own settings, for the run's log."""
    if settings.method == "sft":
        return ""
    options = {"beta": settings.dpo_beta} if settings.method == "dpo" else dict(settings.method_options)
    if settings.method == "grpo":
        options = {"beta": settings.grpo_beta, "answers per prompt": settings.num_generations}
    shown = ", ".join(f"{name} {value}" for name, value in options.items() if name != "precompute_ref_log_probs")
    return f" ({settings.method.upper()}, {shown})"


def announce(settings: RunSettings, spec: TrainSpec, train_rows: int, eval_rows: int) -> None:
    for note in settings.notes:
        print(note, flush=True)
    quantization = settings.quantization + (" + double quant" if settings.double_quant else "")
    if settings.whole_model:
        quantization += f", {settings.finetuning} fine-tuning"
    print(f"training on {settings.device} (torch.{settings.compute_dtype}, {quantization}, gradient checkpointing "
          f"{'on' if settings.gradient_checkpointing else 'off'}): {train_rows} train rows, {eval_rows} eval rows, "
          f"{spec.max_steps} steps" + _method_words(settings),
          flush=True)
    print(f"optimizer {settings.optimizer}", flush=True)
    if settings.forward_passes > 1:
        print(f"each packed sequence of {settings.row_length} tokens trains in {settings.forward_passes} forward "
              f"passes of {settings.max_length} tokens (pack_length; gradient accumulation {settings.grad_accum})",
              flush=True)
    speed = [f"attention {settings.attn_implementation}" if settings.attn_implementation else "",
             "torch.compile" if settings.torch_compile else "", "Liger kernels" if settings.liger_kernel else "",
             f"RoPE {dict(settings.rope_parameters)}" if settings.rope_parameters else ""]
    if any(speed):
        print("with " + ", ".join(part for part in speed if part), flush=True)


def model_and_rows(spec: TrainSpec, out_dir: Path, base_model: str, rows: list[dict], tokenizer,
                   eval_path: Path | None, init_adapter: Path | None
                   ) -> tuple[RunSettings, object, Dataset, Dataset | None]:
    """What SFT and DPO runs both build: the run settings, the 4-bit base with its LoRA (new, or `init_adapter`), and
    the train and eval rows (after dedup and drop); announced in the log."""
    settings = setup_device(spec, out_dir, base_model, init_adapter)
    with phase("data"):
        rows = select_rows(rows, spec, tokenizer)
        check_pack_length(spec, rows, tokenizer)
    with phase("base_load"):
        base = load_base(settings, base_model)
        model = attach_lora(base, settings, init_adapter, out_dir, base_model)
    with phase("data"):
        system_prompt = DataSettings.from_spec(spec).system_prompt  # the validation rows read as the training rows
        held_out = [with_system_prompt(row, system_prompt) for row in load_rows(eval_path)] if eval_path else None
        train_rows, eval_rows = split_dataset(rows, spec.eval_fraction, spec.seed, held_out)
    announce(settings, spec, len(train_rows), len(eval_rows) if eval_rows is not None else 0)
    return settings, model, train_rows, eval_rows
