"""GRPO (reinforcement learning with verifiable rewards) on the same 4-bit base, through the same job, queue, Runs tab
and checkpoints as SFT and DPO.

Rows are `{prompt, reference}` (jobs.data.formats "reference"). For each prompt TRL's GRPOTrainer samples
num_generations answers from the adapter, scores them with the rewards the spec names (jobs.rewards; the reference
column reaches them by name), and pushes the adapter towards the answers that scored above their group's mean. With
grpo_beta > 0 TRL keeps a frozen copy of the starting adapter ("ref") as the KL reference; only the trained adapter is
saved. A person's reward code (allowed per person by the operator, checked at submit) is written into the run folder
and imported from there, so a traceback through it shows its own lines in the job's log.

The reward_model reward is a reward adapter of the same base (grpo_reward_adapter, pinned by id at submit): a second
copy of the base, loaded as this run's is (quantization, compute dtype) but as a sequence classifier with the
adapter, frozen and in eval mode. TRL runs it under inference_mode on each prompt with its answer, formatted by the
reward adapter's own tokenizer and chat template, and logs its mean as rewards/reward_model/mean."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from trl import GRPOConfig, GRPOTrainer

from jobs.data.stats import tokenize_row
from jobs.data.store import load_rows
from jobs.models.loading import load_tokenizer
from jobs.rewards import CODE_FUNCTION, processing_classes, reward_functions
from jobs.run_settings.settings import RunSettings
from jobs.spec import TrainSpec
from jobs.training.callbacks import MetricsSink, SampleCallback, SampleSink, StopCallback
from jobs.training.phases import phase
from jobs.training.prepare import (
    PreparedRun,
    keep_lora_in_fp32,
    model_and_rows,
    planned,
    run_callbacks,
    trainer_args,
)

REWARD_CODE_FILE = "reward_code.py"
REWARD_MODEL_NAME = "reward_model"
"""TRL names a model reward by its config's _name_or_path (the base's folder): the reward copy is named for its term,
so its metrics read rewards/reward_model/... as the functions' read rewards/<term>/..."""


def grpo_config(settings: RunSettings, spec: TrainSpec, out_dir: Path) -> GRPOConfig:
    return GRPOConfig(**trainer_args(settings, spec, out_dir, has_eval=False))


def load_reward_code(source: str, out_dir: Path) -> Callable:
    """The person's `reward` function, from a file in the run folder (the spec holds its text)."""
    path = out_dir / REWARD_CODE_FILE
    path.write_text(source)
    module_spec = importlib.util.spec_from_file_location("studio_reward_code", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    func = getattr(module, CODE_FUNCTION, None)
    if not callable(func):
        raise TypeError(f"{REWARD_CODE_FILE} defines no function {CODE_FUNCTION}(completions, **kwargs)")
    return func


def reward_model(settings: RunSettings, base_model: str, adapter_dir: Path):
    """(the reward adapter on a second copy of the base, frozen; its tokenizer), named for its reward term."""
    from jobs.training.reward import scoring_model

    model, tokenizer = scoring_model(settings, base_model, adapter_dir)
    model.config._name_or_path = REWARD_MODEL_NAME  # this copy's own config: the policy's keeps its name
    print(f"reward model: the reward adapter in {adapter_dir.name} on a second copy of the base", flush=True)
    return model, tokenizer


def prompts_that_fit(rows: list[dict], tokenizer, spec: TrainSpec) -> list[dict]:
    """Rows whose prompt leaves room for a whole answer within max_length (GRPO cuts no prompt itself)."""
    room = spec.max_length - spec.max_completion_length
    kept = [row for row in rows if len(tokenize_row(tokenizer, {"messages": row["prompt"]}, False).ids) <= room]
    if len(kept) < len(rows):
        print(f"dropped {len(rows) - len(kept)} rows whose prompt is longer than max_length - max_completion_length "
              f"({room} tokens)", flush=True)
    if not kept:
        raise ValueError(f"no prompt fits in {room} tokens (max_length - max_completion_length): raise max_length")
    return kept


def prepare_grpo_run(spec: TrainSpec, out_dir: Path, base_model: str, dataset_path: Path, on_metrics: MetricsSink,
                     should_stop: Callable[[], bool], on_samples: SampleSink | None = None,
                     init_adapter: Path | None = None, reward_adapter: Path | None = None) -> PreparedRun:
    with phase("data"):
        tokenizer = load_tokenizer(base_model)
        rows = load_rows(dataset_path)
        spec = planned(spec, base_model, rows, tokenizer, init_adapter)
        rows = prompts_that_fit(rows, tokenizer, spec)
    settings, model, train_rows, _ = model_and_rows(spec, out_dir, base_model, rows, tokenizer, None, init_adapter)
    code = load_reward_code(spec.grpo_reward_code, out_dir) if settings.rewards.uses_code else None
    scorer = scorer_tokenizer = None
    if settings.rewards.uses_reward_model:
        if reward_adapter is None:
            raise ValueError("the rewards name reward_model but the job pinned no reward adapter (grpo_reward_adapter)")
        with phase("base_load"):  # the reward copy is a second base load
            scorer, scorer_tokenizer = reward_model(settings, base_model, reward_adapter)
    rewards = reward_functions(settings.rewards, code, scorer)
    print(f"GRPO: {settings.num_generations} answers per prompt of up to {settings.max_completion_length} tokens, "
          f"rewards {spec.grpo_rewards}, beta {settings.grpo_beta}", flush=True)
    stop = StopCallback(should_stop)
    callbacks = run_callbacks(spec, out_dir, on_metrics, stop, has_eval=False)
    prompts = [row["prompt"] for row in train_rows.select(range(min(spec.sample_prompts, len(train_rows))))]
    if on_samples is not None and prompts:
        callbacks.append(SampleCallback(prompts, tokenizer, on_samples, every_steps=spec.eval_steps, stop=stop))
    with phase("trainer_build"):
        trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=grpo_config(settings, spec, out_dir),
                              train_dataset=train_rows, processing_class=tokenizer, callbacks=callbacks,
                              reward_processing_classes=processing_classes(settings.rewards, scorer_tokenizer))
    keep_lora_in_fp32(trainer.model, settings)
    return PreparedRun(trainer=trainer, tokenizer=tokenizer, stop=stop, has_eval=False, spec=spec,
                       settings=settings)
