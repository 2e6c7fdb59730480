"""Training is a function: load → quantize → attach LoRA → data → trainer → train → save.

`train` knows nothing of the database, queue or UI. Observability goes through `on_metrics`, and
`should_stop` lets the caller end a run early (a checkpoint is saved so it can resume)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import transformers
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from jobs.data.mixing import last_turn_only
from jobs.models.loading import load_tokenizer
from jobs.models.templates import template_text
from jobs.run_settings.settings import RunSettings
from jobs.spec import PREFERENCE_METHODS, REWARD_METHOD, TrainSpec
from jobs.training.adapter import save_adapter
from jobs.training.best import BestAdapterCallback, BestRecord, restore_best
from jobs.training.callbacks import MetricsSink, SampleCallback, SampleSink, StopCallback, StopRequested
from jobs.training.checkpoints import newest_complete_checkpoint
from jobs.training.distributed import is_main
from jobs.training.lora_init import loraplus_optimizer
from jobs.training.phases import phase
from jobs.training.prepare import (
    DatasetFiles,
    PreparedRun,
    keep_lora_in_fp32,
    model_and_rows,
    planned,
    run_callbacks,
    run_rows,
    trainer_args,
)
from jobs.training.whole_model import save_whole_model


@dataclass(frozen=True)
class TrainResult:
    stopped: bool
    """True when `should_stop` ended the run early; a checkpoint was saved and no adapter was written."""
    adapter_dir: Path | None
    final_metrics: dict[str, float]


def quiet_libraries() -> None:
    """Keep the run log readable: no progress bars, no deprecation chatter from the libraries."""
    import warnings

    import datasets

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*padding-free.*")
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def sft_config(settings: RunSettings, spec: TrainSpec, out_dir: Path, has_eval: bool,
               text_rows: bool = False) -> SFTConfig:
    args = trainer_args(settings, spec, out_dir, has_eval)
    return SFTConfig(**{
        **args, "assistant_only_loss": settings.assistant_only_loss and not text_rows,  # raw text: every token
        # A packed row has no padding (and its pad id may be a real token, such as SmolLM2's <|im_end|>): count all.
        "include_num_input_tokens_seen": "all" if settings.packing else "non_padding"})


def sample_prompts(rows: Dataset | None, count: int) -> list[list[dict]]:
    """The first rows' conversations up to their last user turn: what the samples answer (held-out rows, or the
    training rows of a run without an eval split)."""
    if rows is None or count <= 0:
        return []
    prompts = []
    for row in rows.select(range(min(count, len(rows)))):
        messages = row.get("messages") or []  # raw text rows have no prompts to answer
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is not None:
            prompts.append(messages[: last_user + 1])
    return prompts


def prepare_run(spec: TrainSpec, out_dir: Path, base_model: str, dataset_path: DatasetFiles, on_metrics: MetricsSink,
                should_stop: Callable[[], bool], on_samples: SampleSink | None = None,
                eval_path: Path | None = None, init_adapter: Path | None = None,
                reward_adapter: Path | None = None) -> PreparedRun:
    """Load → quantize → attach LoRA → data → trainer, as `spec` says; `eval_path`: a validation dataset;
    `init_adapter`: the adapter to continue from; `reward_adapter`: GRPO's reward model (grpo_reward_adapter)."""
    if spec.method == "grpo":
        from jobs.training.grpo import prepare_grpo_run

        return prepare_grpo_run(spec, out_dir, base_model, dataset_path, on_metrics, should_stop, on_samples,
                                init_adapter, reward_adapter)
    if spec.method in PREFERENCE_METHODS or spec.method == REWARD_METHOD:  # a reward model trains on the same pairs
        from jobs.training.preference import prepare_preference_run

        return prepare_preference_run(spec, out_dir, base_model, dataset_path, on_metrics, should_stop, eval_path,
                                      init_adapter)
    with phase("data"):
        rows = run_rows(spec, dataset_path)
        text_rows = bool(rows) and "text" in rows[0]  # raw text: language modeling, loss on every token
        tokenizer = load_tokenizer(base_model, for_assistant_only_loss=spec.assistant_only_loss and not text_rows,
                                   chat_template=template_text(spec.chat_template))
        spec = planned(spec, base_model, rows, tokenizer, init_adapter)
    settings, model, train_rows, eval_rows = model_and_rows(spec, out_dir, base_model, rows, tokenizer, eval_path,
                                                            init_adapter)

    stop = StopCallback(should_stop)
    callbacks = run_callbacks(spec, out_dir, on_metrics, stop, eval_rows is not None)
    # Without an eval split the samples answer training prompts, every eval_steps: learning stays visible.
    prompts = sample_prompts(train_rows if eval_rows is None else eval_rows, spec.sample_prompts)
    if on_samples is not None and prompts:
        callbacks.append(SampleCallback(prompts, tokenizer, on_samples,
                                        every_steps=spec.eval_steps if eval_rows is None else None, stop=stop))
    args = sft_config(settings, spec, out_dir, eval_rows is not None, text_rows)
    if settings.data.last_turn_only and not text_rows:  # after the samples took their prompts from the chats
        train_rows, eval_rows = (None if part is None else Dataset.from_list([last_turn_only(row) for row in part])
                                 for part in (train_rows, eval_rows))
    with phase("trainer_build"):  # TRL tokenizes and packs the rows here
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
                             processing_class=tokenizer, callbacks=callbacks,
                             optimizer_cls_and_kwargs=loraplus_optimizer(settings, args))
    keep_lora_in_fp32(trainer.model, settings)
    return PreparedRun(trainer=trainer, tokenizer=tokenizer, stop=stop, has_eval=eval_rows is not None, spec=spec,
                       settings=settings)


def train(spec: TrainSpec, out_dir: Path, base_model: str, dataset_path: DatasetFiles, on_metrics: MetricsSink,
          should_stop: Callable[[], bool | str], on_samples: SampleSink | None = None,
          eval_path: Path | None = None, init_adapter: Path | None = None,
          reward_adapter: Path | None = None) -> TrainResult:
    """Train one LoRA adapter as `spec` says. Resumes from the newest complete checkpoint in `out_dir`.
    `should_stop` ends the run early: true at a step's end with a checkpoint, CANCEL (jobs.training.callbacks) at once
    with nothing kept."""
    if not is_main():  # another rank of a several-device run: rank 0 reports and keeps what the run makes
        on_metrics, on_samples = _ignore_metrics, None
    run = prepare_run(spec, out_dir, base_model, dataset_path, on_metrics, should_stop, on_samples, eval_path,
                      init_adapter, reward_adapter)
    trainer, spec = run.trainer, run.spec
    resume_from = newest_complete_checkpoint(out_dir / "checkpoints")
    if resume_from:
        print(f"resuming from {resume_from.name} (step {resume_from.name.rpartition('-')[2]})", flush=True)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, BestAdapterCallback):
            if resume_from:
                callback.resume(resume_from)
            else:
                callback.resume_fresh()
    with phase("training"):
        try:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except StopRequested:
            pass  # a cancel ended an eval midway: nothing of the run is kept
    if run.stop.stopped:
        return TrainResult(stopped=True, adapter_dir=None, final_metrics={})

    final = _final_metrics(trainer, run.has_eval)  # the last step's, which the curve ends with
    on_metrics(trainer.state.global_step, {k: v for k, v in final.items() if k == "eval_loss"},
               trainer.state.max_steps)
    if not is_main():
        return TrainResult(stopped=False, adapter_dir=None, final_metrics=final)
    with phase("adapter_save"):
        final.update(_best_metrics(trainer, spec, out_dir, run.has_eval))
        if run.settings.whole_model:
            adapter_dir = save_whole_model(trainer.model, run.tokenizer, spec, final, out_dir)
        else:
            adapter_dir = save_adapter(trainer.model, run.tokenizer, spec, final, out_dir)
    return TrainResult(stopped=False, adapter_dir=adapter_dir, final_metrics=final)


def _ignore_metrics(step: int, values: dict[str, float], total_steps: int | None) -> None:
    """What a rank other than 0 does with its metrics: nothing (rank 0 logs the values gathered across ranks)."""


def _best_metrics(trainer, spec: TrainSpec, out_dir: Path, has_eval: bool) -> dict[str, float]:
    """With keep_best, the kept lowest-eval-loss weights go back into the model (the adapter saved next), and the
    metrics say which step they are from; an early stop is recorded too."""
    if not has_eval:
        return {}
    record, metrics = BestRecord.read(out_dir), {}
    if record.stopped_early:
        metrics["stopped_early_at_step"] = float(trainer.state.global_step)
    kept = spec.keep_best and spec.finetuning == "lora"  # a whole-model run keeps no best copy (jobs.training.prepare)
    if kept and record.step != trainer.state.global_step and restore_best(trainer.model, out_dir, record):
        print(f"the adapter is the one from step {record.step}, where eval loss was lowest "
              f"({record.eval_loss:.4f})", flush=True)
        last = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
        metrics.update(best_step=float(record.step), eval_loss=record.eval_loss)
        if last:
            metrics["last_eval_loss"] = float(last[-1])
    return metrics


def _final_metrics(trainer, has_eval: bool) -> dict[str, float]:
    history = trainer.state.log_history
    final: dict[str, float] = {"steps": float(trainer.state.global_step)}
    train_losses = [entry["loss"] for entry in history if "loss" in entry]
    if train_losses:
        final["train_loss_first"], final["train_loss_last"] = train_losses[0], train_losses[-1]
    rewards = [entry["reward"] for entry in history if "reward" in entry]  # GRPO's mean reward per logged step
    if rewards:
        final["reward_first"], final["reward_last"] = rewards[0], rewards[-1]
    if has_eval:
        evals = [entry for entry in history if "eval_loss" in entry]
        at_end = evals and evals[-1].get("step") == trainer.state.global_step
        last = evals[-1] if at_end else trainer.evaluate()
        final["eval_loss"] = float(last["eval_loss"])
        for name in ("eval_accuracy", "eval_margin"):  # a reward model's held-out pairs (TRL's RewardTrainer)
            if name in last:
                final[name] = float(last[name])
    return final
