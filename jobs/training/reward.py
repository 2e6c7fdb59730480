"""Reward-model training (issue 31): TRL's RewardTrainer on preference pairs, on the same 4-bit base, job, queue and
Runs tab as the other methods.

The base loads as a sequence classifier with one output (jobs.training.prepare.load_base: a new `score` head on the
last non-pad token) and takes a LoRA of peft's SEQ_CLS task, which trains and saves the score head in full
(modules_to_save). Rows are the preference shape DPO reads, `{prompt, chosen, rejected}` message lists (TRL joins
the prompt to each answer); rows of whole conversations without a prompt (implicit prompt) are read as they are. The
loss is -log sigmoid(r(chosen) - r(rejected)); TRL logs the pairs' accuracy (chosen scored above rejected) and mean
margin, on the held-out rows as eval_accuracy and eval_margin. The saved adapter scores; it does not generate
(jobs.models.reward_adapters says who refuses it).

Its trainer is prepared as the preference methods' are (jobs.training.preference.prepare_preference_run, with
RewardTrainer); this module holds what a reward model needs beyond them: its pad token, and its base loaded to
score (jobs.evaluate.reward_pairs; GRPO's reward_model term, jobs.training.grpo)."""

from __future__ import annotations

from pathlib import Path

from jobs.spec import REWARD_METHOD, TrainSpec


def with_pad_token(tokenizer):
    """A sequence classifier finds each row's last token by the pad id: a tokenizer without a pad token pads with its
    end-of-sequence token (TRL's own fallback, made explicit so the saved tokenizer says it)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def scores_last_token(model, tokenizer) -> None:
    """The classifier's config names the pad id it looks for (the base's config may have none)."""
    model.config.pad_token_id = tokenizer.pad_token_id


def load_reward_base(base_path: str, variant: TrainSpec):
    """The base loaded as a reward model trained on it (`variant`: the spec fields that say how,
    jobs.chat.request.BaseVariant), as a sequence classifier, without an adapter (jobs.evaluate.reward_pairs
    attaches the reward adapters to it)."""
    from jobs.models.loading import machine
    from jobs.run_settings.settings import Base, resolve
    from jobs.training.prepare import load_base

    settings = resolve(variant.model_copy(update={"method": REWARD_METHOD}), Base.from_dir(base_path), machine())
    return load_base(settings, base_path)


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
    scores_last_token(model, tokenizer)
    return model, tokenizer
