"""The rows a run trains on, shaped from its datasets: several datasets mixed by ratio within a total row budget, a
default system prompt, and the loss on the last assistant turn only.

Mixing is seeded and deterministic: the same spec over the same (pinned) contents takes the same rows in the same
order, so a resumed or recovered run, the plan and the plain TRL script all see the rows the run trains on. A ratio
that asks for more rows than its dataset has is capped: the dataset is taken whole, never repeated (a repeated row
could land in both the training rows and the eval split), and the run log and the plan say how many were taken.

The functions the plain script needs (`mix_counts`, `mix_indices`, `with_system_prompt`, `last_turn_only`) use the
standard library only: the script embeds their source, so it mixes and shapes by the same code, not a copy."""

from __future__ import annotations

from dataclasses import dataclass


def mix_counts(sizes: list[int], ratios: list[float], max_rows: int | None) -> list[int]:
    """Rows taken from each dataset: `ratios` of `max_rows` (largest remainders, so they add up to it), each capped
    at the dataset's size. Without a budget, the largest total the ratios allow with every row used at most once
    (the dataset that runs out first is taken whole)."""
    if max_rows is None:
        max_rows = int(min(size / ratio for size, ratio in zip(sizes, ratios, strict=True) if ratio > 0) + 1e-9)
    total_ratio = sum(ratios)
    exact = [max_rows * ratio / total_ratio for ratio in ratios]
    counts = [int(share) for share in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: max_rows - sum(counts)]:
        counts[i] += 1
    return [min(count, size) for count, size in zip(counts, sizes, strict=True)]


def mix_indices(sizes: list[int], ratios: list[float], max_rows: int | None, seed: int) -> list[tuple[int, int]]:
    """(dataset position, row index) of every row the run takes, in training order: a seeded sample of each dataset
    (`mix_counts` rows), then the samples interleaved by a seeded shuffle."""
    import random

    picked = []
    for position, (size, count) in enumerate(zip(sizes, mix_counts(sizes, ratios, max_rows), strict=True)):
        rows = random.Random(f"{seed}/{position}").sample(range(size), count)
        picked += [(position, index) for index in rows]
    random.Random(f"{seed}/mix").shuffle(picked)
    return picked


def with_system_prompt(row: dict, system_prompt: str) -> dict:
    """The row with `system_prompt` as its first message where it has no system message of its own (chat rows, and a
    preference row's prompt); raw text rows and an empty prompt leave it as it is."""
    if not system_prompt:
        return row
    system = {"role": "system", "content": system_prompt}
    for key in ("messages", "prompt"):
        messages = row.get(key)
        if isinstance(messages, list) and not any(m.get("role") == "system" for m in messages):
            return {**row, key: [system, *messages]}
    return row


def last_turn_only(row: dict) -> dict:
    """A chat row as TRL's conversational prompt/completion: everything before its last assistant message is the
    prompt, that message the completion, so only it carries loss (TRL masks the prompt; with assistant-only loss its
    generation mask applies too). Messages after the last assistant one are not trained on, so they go. A row without
    an assistant message stays as it is."""
    messages = row.get("messages")
    if not isinstance(messages, list):
        return row
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        return row
    shaped = {key: value for key, value in row.items() if key != "messages"}
    return {**shaped, "prompt": messages[:last], "completion": [messages[last]]}


@dataclass(frozen=True)
class Taken:
    """How many rows a run takes from one dataset of its mix."""

    dataset: str
    rows: int
    available: int

    def words(self) -> str:
        capped = " (all of it: the ratio asked for more)" if self.rows == self.available else ""
        return f"{self.rows:,} of {self.available:,} rows from '{self.dataset}'{capped}"


def mixes(parts: list[tuple[str, float]] | tuple, max_rows: int | None) -> bool:
    """True when the rows are not simply the one dataset's: several datasets, or a row budget."""
    return len(parts) > 1 or max_rows is not None


def mixed(mix: list[tuple[str, float]] | tuple, max_rows: int | None, seed: int,
          datasets: dict[str, list]) -> tuple[list, list[Taken]]:
    """The items (rows, or anything per row such as token counts) `mix` ((dataset, ratio) pairs) takes from `datasets`
    (by name) within `max_rows`, in training order, and what it took from each."""
    sizes = [len(datasets[name]) for name, _ in mix]
    indices = mix_indices(sizes, [ratio for _, ratio in mix], max_rows, seed)
    rows = [datasets[mix[position][0]][index] for position, index in indices]
    counts = [0] * len(mix)
    for position, _ in indices:
        counts[position] += 1
    return rows, [Taken(name, count, size) for (name, _), count, size in zip(mix, counts, sizes, strict=True)]


def taken_words(taken: list[Taken]) -> str:
    return "; ".join(part.words() for part in taken)
