"""Reward-model training (issue 31): TRL's RewardTrainer on preference pairs, on the same 4-bit base, job, queue and
Runs tab as the other methods.

The base loads as a sequence classifier with one output (jobs.training.prepare.load_base: a new `score` head on the
last non-pad token) and takes a LoRA of peft's SEQ_CLS task, which trains and saves the score head in full
(modules_to_save). Rows are the preference shape DPO reads, `{prompt, chosen, rejected}` message lists (TRL joins
the prompt to each answer); rows of whole conversations without a prompt (implicit prompt) are read as they are. The
loss is -log sigmoid(r(chosen) - r(rejected)); TRL logs the pairs' accuracy (chosen scored above rejected) and mean
margin, on the held-out rows as eval_accuracy and eval_margin. The saved adapter scores; it does not generate
(jobs.models.reward_adapters says who refuses it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trl import RewardConfig, RewardTrainer

from jobs.models.loading import load_tokenizer
from jobs.models.templates import template_text
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


def with_pad_token(tokenizer):
    """A sequence classifier finds each row's last token by the pad id: a tokenizer without a pad token pads with its
    end-of-sequence token (TRL's own fallback, made explicit so the saved tokenizer says it)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prepare_reward_run(spec: TrainSpec, out_dir: Path, base_model: str, dataset_path: DatasetFiles,
                       on_metrics: MetricsSink, should_stop: Callable[[], bool], eval_path: Path | None = None,
                       init_adapter: Path | None = None) -> PreparedRun:
    with phase("data"):
        tokenizer = with_pad_token(load_tokenizer(base_model, chat_template=template_text(spec.chat_template)))
        rows = run_rows(spec, dataset_path)
        spec = planned(spec, base_model, rows, tokenizer)
    settings, model, train_rows, eval_rows = model_and_rows(spec, out_dir, base_model, rows, tokenizer, eval_path,
                                                            init_adapter)
    model.config.pad_token_id = tokenizer.pad_token_id
    stop = StopCallback(should_stop)
    args = RewardConfig(**trainer_args(settings, spec, out_dir, eval_rows is not None))
    with phase("trainer_build"):  # TRL tokenizes the pairs here
        trainer = RewardTrainer(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
                                processing_class=tokenizer,
                                callbacks=run_callbacks(spec, out_dir, on_metrics, stop, eval_rows is not None),
                                optimizer_cls_and_kwargs=loraplus_optimizer(settings, args))
    keep_lora_in_fp32(trainer.model, settings)  # RewardTrainer casts a quantized model's trainable weights to bf16
    return PreparedRun(trainer=trainer, tokenizer=tokenizer, stop=stop, has_eval=eval_rows is not None, spec=spec,
                       settings=settings)


def load_reward_model(base_path: str, adapter_dir: Path, variant: TrainSpec):
    """(the reward adapter on its base, in eval mode; its tokenizer): the base loaded as it trained (`variant`: the
    spec fields that say how, jobs.chat.request.BaseVariant), as a sequence classifier, for scoring."""
    from jobs.models.loading import machine
    from jobs.run_settings.settings import Base, resolve

    settings = resolve(variant.model_copy(update={"method": REWARD_METHOD}), Base.from_dir(base_path), machine())
    return scoring_model(settings, base_path, adapter_dir)


def scoring_model(settings, base_path: str, adapter_dir: Path):
    """(the reward adapter in `adapter_dir` on the base loaded as `settings` (jobs.run_settings) say, as a sequence
    classifier with one output; its tokenizer): frozen, in eval mode (no dropout), for scoring only."""
    from dataclasses import replace

    from peft import PeftModel
    from transformers import AutoTokenizer

    from jobs.training.prepare import load_base

    tokenizer = with_pad_token(AutoTokenizer.from_pretrained(str(adapter_dir)))
    base = load_base(replace(settings, method=REWARD_METHOD), base_path)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    model.requires_grad_(False)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
