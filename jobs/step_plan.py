"""How much a job trains: the optimizer steps it makes over how many tokens, and the defaults chosen per job.

A fixed batch of packed sequences hurts a small dataset: 4 × 512 tokens per step left a 320-row dataset 12 steps
an epoch, and a worse adapter than a peer's 45 smaller steps (issue 15). So the batch, the length of the run and
the learning rate are chosen per job unless the person set them (an empty field, None, means "choose"):

- packing: on, unless the data packs into fewer than MIN_PACKED_SEQUENCES sequences of max_length (then even
  MAX_AUTO_EPOCHS could not make MIN_TOTAL_STEPS): then each row is its own sequence, so 50 short rows make 45
  steps an epoch, not 9.
- batch_size: sequences per step (packed sequences with packing, else rows) so an epoch has at least
  MIN_STEPS_PER_EPOCH steps: the data's sequences ÷ MIN_STEPS_PER_EPOCH, from 1 to MAX_AUTO_BATCH.
- num_epochs (when max_steps is -1 too): enough epochs for MIN_TOTAL_STEPS steps, from 1 to MAX_AUTO_EPOCHS.
- eval_fraction: no eval split below MIN_ROWS_FOR_EVAL_SPLIT rows, where a tenth would be fewer than 50 rows: every
  row trains (on SmolLM2-135M a tenth of 320 rows held out cost 12% in held-out loss, while a tenth of 900 cost
  nothing, one run each: docs/benchmarks.md); from there a tenth, at most MAX_AUTO_EVAL_ROWS rows (enough for a
  steady eval loss; more only makes every eval slower).
- learning_rate: from the base's size, 2e-4 at 7B scaled by (7B / parameters)^0.7, within [1e-4, 5e-3]: about
  QLoRA's 2e-4 for 7B-13B models and 1e-4 from 33B up, higher for small ones (a 1B model gets 7.8e-4, a 135M one
  3.2e-3; the 4M demo 5e-3). The exponent was 0.5 first, then 0.6: on SmolLM2-135M their 1.4e-3 and 2.1e-3
  reached LLaMA-Factory's held-out loss late or never (docs/benchmarks.md).

Counts come from each row's tokens through the base's tokenizer when it is on this machine, else from its
characters ÷ CHARS_PER_TOKEN. Pure arithmetic: the Train tab shows the plan, submit stores the chosen values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from jobs.data.mixing import Taken, taken_words
from jobs.data.stats import packed_sequence_count
from jobs.data.store import split_sizes
from jobs.spec import TrainSpec


class MemoryNote(Protocol):
    """What a memory budget's choice says in the plan (jobs.models.budget.MemoryFit)."""

    def sentence(self) -> str: ...

MIN_STEPS_PER_EPOCH = 32
MIN_TOTAL_STEPS = 100
MIN_PACKED_SEQUENCES = 10
MAX_AUTO_EPOCHS = 10
MAX_AUTO_BATCH = 8
CHARS_PER_TOKEN = 4
REFERENCE_PARAMS = 7e9
REFERENCE_LEARNING_RATE = 2e-4
LEARNING_RATE_EXPONENT = 0.7
LEARNING_RATE_RANGE = (1e-4, 5e-3)
UNKNOWN_BASE_LEARNING_RATE = 2e-4
MIN_ROWS_FOR_EVAL_SPLIT = 500
MEMORISING_EPOCHS = 2
"""With no rows held out, a dataset below MIN_ROWS_FOR_EVAL_SPLIT trained on for this many epochs or more gets the
plan's memorising warning and its one-click hold-out (the small-data default, docs/benchmarks.md)."""
AUTO_EVAL_FRACTION = 0.1
MAX_AUTO_EVAL_ROWS = 200
METHOD_ROWS = {"dpo": "preference pairs", "orpo": "preference pairs", "simpo": "preference pairs",
               "reward": "preference pairs", "kto": "labelled answers", "grpo": "prompts"}
"""What one row is to each method other than sft, as the plan counts them."""
AUTO_FIELDS = ("eval_fraction", "packing", "batch_size", "num_epochs", "learning_rate")


@dataclass(frozen=True)
class DataSize:
    """A dataset's rows in tokens for one base: counted by its tokenizer, or estimated from characters."""

    lengths: list[int]
    counted: bool
    taken: tuple[Taken, ...] = ()
    """What a mix (or a row budget) took from each dataset (jobs.data.mixing); empty: the dataset's every row."""


@dataclass(frozen=True)
class StepPlan:
    """What a job will do, with the chosen values filled in."""

    spec: TrainSpec
    steps: int
    tokens: int
    """Tokens trained on over the whole run (rows cut at max_length)."""
    sequences_per_epoch: int
    chosen: tuple[str, ...]
    """The fields the rule chose (the others were the person's)."""
    counted: bool
    train_rows: int = 0
    eval_rows: int = 0
    """Rows held out of the dataset for eval (0 with a validation dataset, or with no eval split)."""
    taken: tuple[Taken, ...] = ()
    """What the mix or row budget took from each dataset (empty: every row of the dataset)."""
    memory: MemoryNote | None = None
    """With a memory budget: the levers chosen for it and the peak and speed expected (jobs.models.budget)."""
    longest_row: int = 0
    """The longest row the run keeps, in tokens, cut at max_length: the shortest pack_length that cuts none."""
    placement: str = ""
    """Where a several-device job's ranks run: one host's devices, or a gang's nodes across its pool's hosts
    (jobs.queue.devices.placement_words); empty for one device."""

    def sentence(self, warn: bool = True, memory: bool = True) -> str:
        """The plan in words; `warn`: with the memorising warning at its end, `memory`: with the memory levers'
        sentence (the Train tab shows each apart: the warning under the plan, the memory in the verdict)."""
        spec = self.spec
        unit = "packed sequences" if spec.packing and spec.method == "sft" else METHOD_ROWS.get(spec.method, "rows")
        epochs = f"{spec.num_epochs:g} epoch{'s' if spec.num_epochs != 1 else ''}"
        run = f"{epochs} (max_steps {spec.max_steps})" if spec.max_steps > 0 else epochs
        counted = "" if self.counted else " (estimated from characters: the base's tokenizer is not here yet)"
        levers = f" {self.memory.sentence()}" if memory and self.memory else ""
        chosen = (f" Chosen for this job: {', '.join(_shown(name, getattr(spec, name)) for name in self.chosen)}; "
                  "set a field to override." if self.chosen else "")
        return (f"This job will make {self.steps:,} optimizer steps over {self.tokens:,} tokens{counted}: {run} of "
                f"{self.sequences_per_epoch:,} {unit}, {spec.batch_size} × {spec.grad_accum} per step"
                f"{f' on each of {spec.ranks()} devices' if spec.ranks() > 1 else ''}"
                f"{self.passes_words()}, learning rate {spec.learning_rate:g}. "
                f"{self.placement + ' ' if self.placement else ''}"
                f"{self.method_sentence()}{self.rows_sentence()}{self.eval_sentence()}"
                f"{chosen}{levers}"
                f"{' ' + self.memorising_warning() if warn and self.may_memorise else ''}")

    def passes_words(self) -> str:
        passes = self.spec.forward_passes()
        return (f" (each packed sequence in {passes} forward passes of {self.spec.pack_length} tokens)"
                if passes > 1 else "")

    @property
    def may_memorise(self) -> bool:
        """Small data seen several times with nothing held out: the run could memorise its rows and nothing in it
        would say so (no eval loss, sample answers to training prompts). GRPO keeps no split (its reward shows)."""
        spec = self.spec
        return (not self.eval_rows and not spec.eval_dataset and spec.method != "grpo"
                and self.train_rows < MIN_ROWS_FOR_EVAL_SPLIT and self.epochs >= MEMORISING_EPOCHS)

    @property
    def epochs(self) -> float:
        """The epochs the run makes: its steps over the steps an epoch takes."""
        per_step = (self.spec.batch_size or 1) * self.spec.grad_accum * self.spec.ranks()
        return self.steps / max(1, math.ceil(self.sequences_per_epoch / per_step))

    def memorising_warning(self) -> str:
        """What the plan says when `may_memorise` (else nothing): the risk, and the safer choice in one click."""
        if not self.may_memorise:
            return ""
        return (f"Small data: each of the {self.train_rows:,} rows is trained on {self.epochs:.3g} times at learning "
                f"rate {self.spec.learning_rate:g}, enough to memorise them, and with no rows held out nothing in "
                f"the run would show it. The safer choice: hold out a tenth (eval fraction 0.1) for an eval loss, "
                f"early stopping and the best adapter kept; at 80 rows it cost the adapter 1-4% in held-out loss "
                f"(docs/benchmarks.md, \"What an eval split costs\").")

    def method_sentence(self) -> str:
        """What trains and how, where it is not the usual adapter by supervised fine-tuning (which says nothing)."""
        spec = self.spec
        if spec.method == "sft" and spec.finetuning == "lora":
            return ""
        what = {"lora": "an adapter trains",
                "freeze": f"the base's last {spec.freeze_trainable_layers} decoder blocks"
                          f"{' and its output head' if spec.freeze_train_head else ''} train and the run saves a "
                          f"whole model (freeze fine-tuning)",
                "full": "every weight of the base trains and the run saves a whole model (full fine-tuning)"}
        return f"Method {spec.method}: {what[spec.finetuning]}. "

    def rows_sentence(self) -> str:
        if not self.taken:
            return ""
        return f"Rows taken: {taken_words(list(self.taken))}. "

    def eval_sentence(self) -> str:
        spec = self.spec
        if spec.eval_dataset:
            return f"Eval on the validation dataset '{spec.eval_dataset}' every {spec.eval_steps} steps."
        if self.eval_rows:
            return (f"{self.eval_rows:,} row{'s' if self.eval_rows != 1 else ''} held out for eval every "
                    f"{spec.eval_steps} steps, "
                    f"{self.train_rows:,} train.")
        why = (f" (fewer than {MIN_ROWS_FOR_EVAL_SPLIT:,} rows: each is worth more in training)"
               if "eval_fraction" in self.chosen else "")
        return (f"No eval split{why}: all {self.train_rows:,} rows train, with no eval loss or early stopping (the "
                "sample answers answer training prompts); set an eval fraction or a validation dataset for them.")


def epochs_in(steps: int, steps_per_epoch: int) -> float:
    """The epochs `steps` optimizer steps make, to two decimals (at least the spec's smallest, 0.01): a job of 60 steps
    over 24 a epoch was said to be 1 epoch."""
    return max(0.01, round(steps / steps_per_epoch, 2))


def _shown(name: str, value: object) -> str:
    if isinstance(value, bool):
        return f"{name} {'on' if value else 'off'}"
    return f"{name} {value}" if isinstance(value, str) else f"{name} {value:g}"


def estimated_lengths(rows: list[dict]) -> list[int]:
    """Tokens per row guessed from its characters, for a base whose tokenizer is not on this machine."""
    return [max(1, math.ceil(len(_text(row)) / CHARS_PER_TOKEN)) for row in rows]


def _text(row: dict) -> str:
    if "text" in row:
        return row["text"]
    messages = row.get("messages") or [*row.get("prompt", []), *row.get("chosen", []),
                                        *([{"role": "assistant", "content": row["reference"]}] if "reference" in row
                                          else [])]
    return "".join(f"{m.get('role', '')}: {m.get('content', '')}\n" for m in messages)


def learning_rate_for(params: int | None) -> float:
    """The rule's learning rate for a base of `params` parameters (None: unknown, the usual 7B rate)."""
    if not params:
        return UNKNOWN_BASE_LEARNING_RATE
    rate = REFERENCE_LEARNING_RATE * (REFERENCE_PARAMS / params) ** LEARNING_RATE_EXPONENT
    low, high = LEARNING_RATE_RANGE
    return float(f"{min(high, max(low, rate)):.2g}")


def eval_fraction_for(rows: int) -> float:
    """The rule's eval split for a dataset of `rows` (no validation dataset given)."""
    if rows < MIN_ROWS_FOR_EVAL_SPLIT:
        return 0.0
    return float(f"{min(AUTO_EVAL_FRACTION, MAX_AUTO_EVAL_ROWS / rows):.4g}")


def packed_sequences(train_lengths: list[int], max_length: int) -> int:
    """Sequences of up to max_length that TRL's best-fit packing makes of these rows."""
    if not train_lengths:
        return 0
    return packed_sequence_count(train_lengths, max_length)


def sequences_per_epoch(spec: TrainSpec, train_lengths: list[int]) -> int:
    """Sequences an epoch feeds the trainer: packed sequences, or rows (a preference method never packs)."""
    if spec.packing and spec.method == "sft":
        return packed_sequences(train_lengths, spec.max_length)
    return len(train_lengths)


def pack_length_problem(spec: TrainSpec, longest_row: int) -> str | None:
    """Why the person's pack_length would cut rows (TRL cuts a row at the length it packs to), or None."""
    if spec.method != "sft" or spec.packing is False or spec.pack_length is None or not longest_row:
        return None
    longest = min(longest_row, spec.max_length)
    if spec.pack_length >= longest:
        return None
    return (f"shorter than the longest row ({longest} tokens after the cut at max_length {spec.max_length}): TRL "
            f"would cut it there; set at least {longest} (a divisor of max_length) or leave it empty")


def _steps_per_epoch(spec: TrainSpec, lengths: list[int], sequences: int) -> int:
    """Optimizer steps an epoch makes: a packed sequence in several forward passes is that many sequences of the pack
    length to TRL, and as many micro-batches a step; under DDP each rank trains its share of the sequences (the
    distributed sampler splits them), so a step takes every rank's micro-batches."""
    passes = spec.forward_passes()
    if passes > 1:
        sequences = packed_sequences(lengths, spec.pack_length)
    return max(1, math.ceil(sequences / ((spec.batch_size or 1) * spec.grad_accum * passes * spec.ranks())))


def _kept_lengths(spec: TrainSpec, data: DataSize) -> list[int]:
    return [n for n in data.lengths if spec.overlong == "truncate" or n <= spec.max_length]


def _train_lengths(lengths: list[int], eval_dataset: str, eval_fraction: float) -> list[int]:
    if eval_dataset:
        return lengths
    train_rows, _ = split_sizes(len(lengths), eval_fraction)
    return lengths[:train_rows]


def min_batch_size(method: str) -> int:
    """KTO estimates its KL term from each answer paired with another row's prompt in the same batch, so TRL refuses a
    batch of one; every other method trains on one row a step."""
    return 2 if method == "kto" else 1


def plan(spec: TrainSpec, data: DataSize, base_params: int | None) -> StepPlan:
    """The job's plan: the fields left empty chosen by the rule above, the person's values kept."""
    kept = _kept_lengths(spec, data)
    chosen: dict = {}
    if spec.eval_fraction is None:
        # GRPO keeps no eval split: its progress is the reward it logs (jobs.submit refuses one it is given).
        chosen["eval_fraction"] = 0.0 if spec.eval_dataset or spec.method == "grpo" else eval_fraction_for(len(kept))
    eval_fraction = chosen.get("eval_fraction", spec.eval_fraction)
    lengths = _train_lengths(kept, spec.eval_dataset, eval_fraction)
    if spec.packing is None:
        chosen["packing"] = packed_sequences(lengths, spec.max_length) >= MIN_PACKED_SEQUENCES
    sequences = sequences_per_epoch(spec.model_copy(update=chosen), lengths)
    if spec.batch_size is None:
        chosen["batch_size"] = min(MAX_AUTO_BATCH, max(min_batch_size(spec.method),
                                                       sequences // (MIN_STEPS_PER_EPOCH * spec.ranks())))
    steps_per_epoch = _steps_per_epoch(spec.model_copy(update=chosen), lengths, sequences)
    if spec.num_epochs is None:  # with max_steps, the epochs those steps make (the trainer goes by the steps)
        chosen["num_epochs"] = epochs_in(spec.max_steps, steps_per_epoch) if spec.max_steps > 0 else float(
            min(MAX_AUTO_EPOCHS, max(1, math.ceil(MIN_TOTAL_STEPS / steps_per_epoch))))
    if spec.learning_rate is None:
        chosen["learning_rate"] = learning_rate_for(base_params)
    resolved = TrainSpec.model_validate({**spec.model_dump(), **chosen})
    steps = spec.max_steps if spec.max_steps > 0 else math.ceil(steps_per_epoch * resolved.num_epochs)
    epoch_tokens = sum(min(n, spec.max_length) for n in lengths)
    tokens = round(epoch_tokens * steps / steps_per_epoch)
    # Packing is chosen for every method (the stored spec has it), but only sft reads it: the others never pack.
    shown = tuple(name for name in chosen if (name != "num_epochs" or spec.max_steps <= 0)
                  and (name != "packing" or spec.method == "sft"))
    return StepPlan(spec=resolved, steps=steps, tokens=tokens, sequences_per_epoch=sequences, chosen=shown,
                    counted=data.counted, train_rows=len(lengths), eval_rows=len(kept) - len(lengths),
                    taken=data.taken, longest_row=min(max(kept, default=0), spec.max_length))
