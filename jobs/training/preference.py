"""Preference tuning (DPO, ORPO, SimPO, KTO) on the same 4-bit base, through the same job, queue and Runs tab as SFT.

DPO, ORPO and SimPO read `{prompt, chosen, rejected}` message lists (jobs.data.formats "preference"); KTO reads
`{prompt, completion, label}` (jobs.data.formats "unpaired"). Each is TRL's own trainer: DPOTrainer, KTOTrainer,
ORPOTrainer, and CPOTrainer with the SimPO loss (TRL's SimPO; the settings say loss_type "simpo", cpo_alpha 0).
A reward model (jobs.training.reward) is prepared here too, by TRL's RewardTrainer on the same pairs: the one
difference is its pad token, which its score head needs (`scores_last_token`).

DPO and KTO compare against a reference: started from an adapter, TRL copies it as a frozen "ref" adapter and trains
the other copy, so the reference is the adapter the person preferred to begin with; started fresh, the reference is
the base (adapters disabled). ORPO and SimPO have no reference. Only the trained adapter is saved."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from jobs.models.loading import load_tokenizer
from jobs.models.templates import template_text
from jobs.run_settings.settings import RunSettings
from jobs.spec import REWARD_METHOD, TrainSpec
from jobs.training.callbacks import MetricsSink, StopCallback
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
from jobs.training.reward import scores_last_token, with_pad_token


def trainer_classes(method: str) -> tuple[type, type]:
    """(config class, trainer class) of a preference method or a reward model. ORPO and CPO live in TRL's
    experimental package (imported only for them; its import warning is silenced: the studio pins TRL and tests
    these trainers)."""
    if method == "dpo":
        return DPOConfig, DPOTrainer
    if method == "kto":
        return KTOConfig, KTOTrainer
    if method == REWARD_METHOD:
        from trl import RewardConfig, RewardTrainer

        return RewardConfig, RewardTrainer
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOConfig, ORPOTrainer
    if method == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOConfig, CPOTrainer
    raise ValueError(f"not a preference method: {method}")


def preference_config(settings: RunSettings, spec: TrainSpec, out_dir: Path, has_eval: bool):
    config, _ = trainer_classes(settings.method)
    return config(**trainer_args(settings, spec, out_dir, has_eval))


def prepare_preference_run(spec: TrainSpec, out_dir: Path, base_model: str, dataset_path: DatasetFiles,
                           on_metrics: MetricsSink, should_stop: Callable[[], bool], eval_path: Path | None = None,
                           init_adapter: Path | None = None) -> PreparedRun:
    """The trainer of a preference method or a reward model (`spec.method`), on its TRL trainer."""
    scores = spec.method == REWARD_METHOD
    with phase("data"):
        tokenizer = load_tokenizer(base_model, chat_template=template_text(spec.chat_template))
        if scores:
            tokenizer = with_pad_token(tokenizer)
        rows = run_rows(spec, dataset_path)
        spec = planned(spec, base_model, rows, tokenizer, init_adapter)
    settings, model, train_rows, eval_rows = model_and_rows(spec, out_dir, base_model, rows, tokenizer, eval_path,
                                                            init_adapter)
    if scores:
        scores_last_token(model, tokenizer)
    if init_adapter is not None:
        reference = "a frozen copy of it is the reference" if settings.has_reference else "it trains on"
        print(f"starting from the adapter in {init_adapter.name}; {reference}", flush=True)
    stop = StopCallback(should_stop)
    _, trainer_class = trainer_classes(settings.method)
    with phase("trainer_build"):  # TRL tokenizes the rows here
        trainer = trainer_class(model=model, args=preference_config(settings, spec, out_dir, eval_rows is not None),
                                train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer,
                                callbacks=run_callbacks(spec, out_dir, on_metrics, stop, eval_rows is not None))
    # TRL's preference trainers do not take optimizer_cls_and_kwargs (RewardTrainer does, and only stores it): the
    # Trainer they all are reads it in create_optimizer.
    trainer.optimizer_cls_and_kwargs = loraplus_optimizer(settings, trainer.args)
    keep_lora_in_fp32(trainer.model, settings)  # the TRL trainers cast a quantized model's trainable weights to bf16
    return PreparedRun(trainer=trainer, tokenizer=tokenizer, stop=stop, has_eval=eval_rows is not None, spec=spec,
                       settings=settings)
