"""Preference tuning (DPO) on the same 4-bit base, through the same job, queue and Runs tab as SFT.

Rows are `{prompt, chosen, rejected}` message lists (jobs.data.formats "preference"). Started from an adapter, TRL
copies it as a frozen "ref" adapter and trains the other copy, so the reference is the adapter the person preferred
to begin with; started fresh, the reference is the base (adapters disabled). Only the trained adapter is saved."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trl import DPOConfig, DPOTrainer

from jobs.data.store import load_rows
from jobs.models.loading import load_tokenizer
from jobs.run_settings.settings import RunSettings
from jobs.spec import TrainSpec
from jobs.training.callbacks import MetricsSink, StopCallback
from jobs.training.phases import phase
from jobs.training.prepare import (
    PreparedRun,
    keep_lora_in_fp32,
    model_and_rows,
    planned,
    run_callbacks,
    trainer_args,
)


def dpo_config(settings: RunSettings, spec: TrainSpec, out_dir: Path, has_eval: bool) -> DPOConfig:
    return DPOConfig(**trainer_args(settings, spec, out_dir, has_eval))


def prepare_dpo_run(spec: TrainSpec, out_dir: Path, base_model: str, dataset_path: Path, on_metrics: MetricsSink,
                    should_stop: Callable[[], bool], eval_path: Path | None = None,
                    init_adapter: Path | None = None) -> PreparedRun:
    with phase("data"):
        tokenizer, rows = load_tokenizer(base_model), load_rows(dataset_path)
        spec = planned(spec, base_model, rows, tokenizer)
    settings, model, train_rows, eval_rows = model_and_rows(spec, out_dir, base_model, rows, tokenizer, eval_path,
                                                            init_adapter)
    if init_adapter is not None:
        print(f"starting from the adapter in {init_adapter.name}; a frozen copy of it is the reference", flush=True)
    stop = StopCallback(should_stop)
    with phase("trainer_build"):  # TRL tokenizes the pairs here
        trainer = DPOTrainer(model=model, args=dpo_config(settings, spec, out_dir, eval_rows is not None),
                             train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer,
                             callbacks=run_callbacks(spec, out_dir, on_metrics, stop, eval_rows is not None))
    keep_lora_in_fp32(trainer.model, settings)
    return PreparedRun(trainer=trainer, tokenizer=tokenizer, stop=stop, has_eval=eval_rows is not None, spec=spec,
                       settings=settings)
