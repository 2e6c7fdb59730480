"""Observability and control live in Trainer callbacks, not in the loop: metrics out, a stop request in, and
the completion marker that makes a checkpoint resumable."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

from transformers import StoppingCriteria, TrainerCallback

from jobs.training.checkpoints import mark_complete
from jobs.training.distributed import agreed_stop, barrier, is_main

MetricsSink = Callable[[int, dict[str, float], int | None], None]
"""(step, {metric name: value}, total steps) -> None."""
SampleSink = Callable[[int, list[tuple[str, str]]], None]
"""(step, [(prompt, answer), ...]) -> None."""
LOGGED_METRICS = ("loss", "learning_rate", "grad_norm", "eval_loss", "mean_token_accuracy", "epoch",
                  # DPO: how far the chosen answer's reward is above the rejected one's, and how often it is
                  "rewards/margins", "rewards/accuracies", "eval_rewards/margins", "eval_rewards/accuracies",
                  # ORPO: its SFT term and its odds-ratio term; KTO: the KL estimate its rewards are measured against
                  "nll_loss", "log_odds_ratio", "kl", "eval_nll_loss", "eval_log_odds_ratio", "eval_kl",
                  # GRPO: the weighted reward's mean and spread, the KL to the reference (kl), the answers' length
                  "reward", "reward_std", "completions/mean_length",
                  # A reward model: how often chosen scores above rejected, and by how much (TRL's RewardTrainer)
                  "accuracy", "margin", "eval_accuracy", "eval_margin")
RENAMED = {"num_input_tokens_seen": "tokens_seen"}  # the Trainer's count: kept in checkpoints, so a resume goes on
SAMPLE_NEW_TOKENS = 48


def memory_in_use() -> dict[str, float]:
    """Memory now and at peak, in bytes: the GPU's allocations under CUDA, else this process's resident set."""
    import torch

    if torch.cuda.is_available():
        return {"memory_bytes": float(torch.cuda.memory_allocated()),
                "memory_reserved_bytes": float(torch.cuda.memory_reserved()),
                "peak_memory_bytes": float(torch.cuda.max_memory_allocated())}
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return {"memory_bytes": float(resident_pages * os.sysconf("SC_PAGE_SIZE")), "peak_memory_bytes": peak_rss()}


def peak_rss() -> float:
    """This process's peak resident set in bytes. VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across
    exec, so a child forked from a large process (the app, with chat models loaded) would report its parent's size."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


class MetricsCallback(TrainerCallback):
    """Forwards logged metrics, adding non-pad tokens per second from TRL's running token count and the memory in
    use (the measured peak is what the memory estimate is checked against)."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink
        self._last: tuple[float, float] | None = None  # (time, num_tokens)

    def on_train_begin(self, args, state, control, **kwargs):
        # TRL counts tokens from 0 in every trainer, a resumed one included: measuring from here gives the first
        # interval (after a resume too) its throughput instead of dropping it.
        self._last = (time.monotonic(), 0.0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        values = {name: float(logs[name]) for name in LOGGED_METRICS if isinstance(logs.get(name), int | float)}
        values.update({name: float(value) for name, value in logs.items()  # GRPO: each reward's own mean
                       if name.startswith("rewards/") and name.endswith("/mean") and isinstance(value, int | float)})
        values.update({ours: float(logs[theirs]) for theirs, ours in RENAMED.items()
                       if isinstance(logs.get(theirs), int | float)})
        if "num_tokens" in logs:
            now, tokens = time.monotonic(), float(logs["num_tokens"])
            if self._last is not None and tokens > self._last[1] and now > self._last[0]:
                values["tokens_per_s"] = (tokens - self._last[1]) / (now - self._last[0])
            self._last = (now, tokens)
        if values:
            self.sink(state.global_step, {**values, **memory_in_use()}, state.max_steps)


CANCEL = "cancel"
"""What a `should_stop` returns for a stop that keeps nothing (a cancelled job, an attempt that lost its job): the run
ends without the step's eval or a checkpoint, and is obeyed inside an eval and a sample answer too. Any other true
value stops at the end of the step, after its eval, with a checkpoint the next attempt resumes from."""


class StopRequested(Exception):
    """Raised out of an eval that a CANCEL interrupted between two batches; `train` ends the run there."""


class StopCallback(TrainerCallback):
    """Ends the run when `should_stop` asks (see CANCEL). A step can take seconds and an eval or the sample answers
    longer (25 s from a cancel to its end was measured on a loaded CPU), so a cancel is also looked for between eval
    batches and between the tokens of a sample answer."""

    def __init__(self, should_stop: Callable[[], bool | str]) -> None:
        self.should_stop = should_stop
        self.stopped = False
        self.discarded = False
        """A CANCEL: nothing of the run is kept."""

    def poll(self) -> bool:
        """Whether the run keeps nothing; a plain stop asked earlier may still turn into a cancel."""
        if not self.discarded and (request := self.should_stop()):
            self.stopped, self.discarded = True, request == CANCEL
        return self.discarded

    def on_step_end(self, args, state, control, **kwargs):
        self.poll()
        # Several ranks stop together or not at all (a lone rank would wait for the others' gradients for ever).
        if request := agreed_stop(CANCEL if self.discarded else self.stopped):
            self.stopped, self.discarded = True, request == CANCEL
        if self.stopped:
            control.should_training_stop = True
            control.should_save = not self.discarded
            if self.discarded:
                control.should_evaluate = False
        return control

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.poll():
            raise StopRequested
        return control


class CompleteMarkerCallback(TrainerCallback):
    """Marks a checkpoint complete once the Trainer has finished writing it; a kill mid-save leaves none."""

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank wrote its RNG state into it: complete only once all have
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if is_main() and checkpoint.is_dir():
            mark_complete(checkpoint, state.global_step)
        return control


class SampleCallback(TrainerCallback):
    """Greedy answers to a few prompts: the base model's before training (step 0), then at every eval (or every
    `every_steps` in a run without evals) and at the end, so a person sees learning happen. Prompts are
    conversations ending with the user's turn."""

    def __init__(self, prompts: list[list[dict]], tokenizer, sink: SampleSink, every_steps: int | None = None,
                 stop: StopCallback | None = None) -> None:
        self.prompts, self.tokenizer, self.sink, self.every_steps = prompts, tokenizer, sink, every_steps
        self.stop = stop
        """The run's stop: no answers once it is stopping, and a cancel ends one midway (and it is dropped)."""
        self._answered: set[int] = set()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self._answer(model, 0)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._answer(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_steps and state.global_step % self.every_steps == 0:
            self._answer(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.stop is None or not self.stop.stopped:  # a stopped run's next attempt, if any, answers at its end
            self._answer(model, state.global_step)

    def _answer(self, model, step: int) -> None:
        import torch

        if not self.prompts or model is None or step in self._answered or (self.stop and self.stop.poll()):
            return
        self._answered.add(step)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            answers = [(messages[-1]["content"], answer)
                       for messages, answer in zip(self.prompts, self._generate(model), strict=True)]
        if was_training:
            model.train()
        if self.stop is None or not self.stop.discarded:  # answers cut short by a cancel are not the model's
            self.sink(step, answers)

    def _generate(self, model) -> list[str]:
        """Every prompt's greedy answer from ONE left-padded generate instead of one per prompt (a default SmolLM2
        job's training loop went 868 s -> 479 s on a 2-core CPU). With fp32 compute each row equals its unbatched
        answer (tested); in bf16 (GPUs; 'auto' on a native-bf16 CPU for a wide model) a padded row may round
        differently. The tokenizer is the trainer's, so its padding side is put back."""
        tokenizer, side = self.tokenizer, self.tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            inputs = tokenizer.apply_chat_template(self.prompts, add_generation_prompt=True, padding=True,
                                                   return_tensors="pt", return_dict=True).to(model.device)
        finally:
            tokenizer.padding_side = side
        until_cancelled = [_UntilCancelled(self.stop)] if self.stop else None
        output = model.generate(**inputs, max_new_tokens=SAMPLE_NEW_TOKENS, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, stopping_criteria=until_cancelled)
        start = inputs["input_ids"].shape[1]
        return [tokenizer.decode(row[start:], skip_special_tokens=True).strip() for row in output]


class _UntilCancelled(StoppingCriteria):
    """A generation stopping criterion: every row ends at the next token once the run is cancelled."""

    def __init__(self, stop: StopCallback) -> None:
        self.stop = stop

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.stop.poll(), dtype=torch.bool, device=input_ids.device)
