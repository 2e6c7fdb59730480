"""What a dataset is to a given base model: each row's tokens (through its chat template), which of them carry
loss, how many rows a max_length truncates, turns per row, exact duplicates, and how many rows a packed sequence
holds. A tokenizer only (never weights), so the web process can show it.

The loss mask is the one TRL trains with: for assistant-only loss, `apply_chat_template(...,
return_assistant_tokens_mask=True)` over the template with generation markers (jobs.models.templates); for raw
text, every token. Every render holds jobs.models.templates' one lock: the web process tokenizes for several
requests at once."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from jobs.data.mixing import with_system_prompt
from jobs.models.templates import encode_text, known_templates, render_chat, training_template

HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class Counting:
    """What a run puts around each row before it trains on it, so a count of its tokens is the run's: the spec's
    system prompt (added where a row has none), and its chat template where it names one the studio knows. A pasted
    template is counted with the base's own: rendering a person's template runs only in its bounded process
    (jobs.models.template_render), and a count is not worth one."""

    system_prompt: str = ""
    chat_template: str | None = None
    """A known template's text; None: the base's own."""

    @classmethod
    def of(cls, system_prompt: str, chat_template: str | None) -> Counting:
        return cls(system_prompt or "", known_templates().get(chat_template or ""))

    def rows(self, rows: list[dict]) -> list[dict]:
        return [with_system_prompt(row, self.system_prompt) for row in rows] if self.system_prompt else rows

    def lengths(self, tokenizer, rows: list[dict]) -> list[int]:
        return [len(tokenize_row(tokenizer, row, False, self.chat_template).ids) for row in self.rows(rows)]


PLAIN = Counting()
"""The rows as stored, through the base's own template: what the Datasets tab counts."""


@dataclass(frozen=True)
class TokenizedRow:
    ids: list[int]
    loss: list[bool]
    """Per token: whether it carries loss."""


def tokenize_row(tokenizer, row: dict, assistant_only_loss: bool, chat_template: str | None = None) -> TokenizedRow:
    """A row's tokens and loss flags; a preference pair as its prompt with the chosen answer (what DPO raises), an
    unpaired answer as its prompt with the answer."""
    if "label" in row:
        row = {"messages": row["prompt"] + row["completion"]}
    if "chosen" in row:
        row = {"messages": row["prompt"] + row["chosen"]}
    elif "reference" in row:  # a GRPO row: its prompt answered with the reference
        row = {"messages": [*row["prompt"], {"role": "assistant", "content": row["reference"]}]}
    if "text" in row:
        ids = encode_text(tokenizer, row["text"])
        return TokenizedRow(ids, [True] * len(ids))
    if assistant_only_loss:
        encoded = render_chat(tokenizer, row["messages"], chat_template=training_template(tokenizer.chat_template),
                              return_assistant_tokens_mask=True, return_dict=True)
        return TokenizedRow(list(encoded["input_ids"]), [bool(m) for m in encoded["assistant_masks"]])
    ids = render_chat(tokenizer, row["messages"], chat_template=chat_template, tokenize=True,
                      return_dict=True)["input_ids"]
    return TokenizedRow(list(ids), [True] * len(ids))


@dataclass(frozen=True)
class DatasetStats:
    lengths: list[int]
    max_length: int
    loss_tokens: int
    turns: list[int]
    duplicates: int
    rows_per_packed_sequence: float | None
    no_loss_after_cut: int = 0
    """Rows whose cut at max_length leaves no token with loss (a long prompt): TRL drops them before training."""

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def over_max(self) -> int:
        return sum(length > self.max_length for length in self.lengths)

    @property
    def trained_tokens(self) -> int:
        """Tokens the trainer sees: each row cut at max_length."""
        return sum(min(length, self.max_length) for length in self.lengths)

    @property
    def loss_share(self) -> float:
        return self.loss_tokens / self.trained_tokens if self.trained_tokens else 0.0

    def histogram(self, bins: int = HISTOGRAM_BINS) -> list[tuple[int, int, int]]:
        """(from, to, rows) buckets of equal width over 0..max(longest row, max_length); the last bucket also
        holds rows of exactly its `to` length."""
        top = max([*self.lengths, self.max_length, 1])
        width = max(1, -(-top // bins))
        counts = [0] * bins
        for length in self.lengths:
            counts[min(length // width, bins - 1)] += 1
        return [(i * width, (i + 1) * width, counts[i]) for i in range(bins)]

    def summary(self) -> dict:
        return {"rows": len(self.lengths), "tokens": self.tokens, "max_length": self.max_length,
                "longer_than_max_length": self.over_max,
                "share_longer": self.over_max / len(self.lengths) if self.lengths else 0.0,
                "median_tokens": statistics.median(self.lengths) if self.lengths else 0,
                "loss_token_share": self.loss_share, "mean_turns": statistics.mean(self.turns) if self.turns else 0,
                "exact_duplicates": self.duplicates, "no_loss_after_cut": self.no_loss_after_cut,
                "rows_per_packed_sequence": self.rows_per_packed_sequence}


def duplicates(rows: list[dict]) -> int:
    """Rows that repeat an earlier row exactly."""
    seen, repeated = set(), 0
    for row in rows:
        key = json.dumps(row, sort_keys=True)
        repeated += key in seen
        seen.add(key)
    return repeated


def rows_per_packed_sequence(lengths: list[int], max_length: int) -> float | None:
    """How many rows a packed sequence of max_length holds on average: best-fit decreasing (TRL's BFD packing),
    over-long rows truncated to max_length first."""
    if not lengths:
        return None
    return len(lengths) / packed_sequence_count(lengths, max_length)


def packed_sequence_count(lengths: list[int], max_length: int) -> int:
    """Sequences best-fit decreasing packing makes: each row, longest first, goes into the open sequence with the
    least room that still fits it, else opens one. The open sequences are counted by room left, so each row costs
    O(log max_length) (a list of open sequences scanned per row took minutes for 40,000 rows)."""
    rooms = _RoomCounts(max_length)
    count = 0
    for length in sorted((min(length, max_length) for length in lengths), reverse=True):
        room = rooms.smallest_at_least(length)
        if room is None:
            count += 1
            rooms.add(max_length - length, 1)
        else:
            rooms.add(room, -1)
            rooms.add(room - length, 1)
    return count


class _RoomCounts:
    """How many open sequences have each room 0..max_length left: a Fenwick tree over room values."""

    def __init__(self, max_length: int) -> None:
        self.size = max_length + 1
        self.tree = [0] * (self.size + 1)
        self.total = 0

    def add(self, room: int, delta: int) -> None:
        self.total += delta
        index = room + 1
        while index <= self.size:
            self.tree[index] += delta
            index += index & -index

    def smallest_at_least(self, room: int) -> int | None:
        below, index = 0, room  # open sequences with less room than asked (rooms 0..room-1)
        while index > 0:
            below += self.tree[index]
            index -= index & -index
        if below == self.total:
            return None
        wanted, position, step = below + 1, 0, 1 << self.size.bit_length()
        while step:  # the position of the `wanted`-th open sequence in room order
            if position + step <= self.size and self.tree[position + step] < wanted:
                position += step
                wanted -= self.tree[position]
            step >>= 1
        return position  # tree index position + 1 holds room `position`


def dataset_stats(rows: list[dict], tokenizer, max_length: int, assistant_only_loss: bool,
                  packing: bool = True) -> DatasetStats:
    tokenized = [tokenize_row(tokenizer, row, assistant_only_loss) for row in rows]
    lengths = [len(t.ids) for t in tokenized]
    return DatasetStats(
        lengths=lengths, max_length=max_length,
        loss_tokens=sum(sum(t.loss[:max_length]) for t in tokenized),
        turns=[sum(m["role"] == "user" for m in row.get("messages", row.get("prompt", []))) for row in rows],
        duplicates=duplicates(rows),
        no_loss_after_cut=sum(not any(t.loss[:max_length]) for t in tokenized),
        rows_per_packed_sequence=rows_per_packed_sequence(lengths, max_length) if packing else None)
