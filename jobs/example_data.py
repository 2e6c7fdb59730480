"""Seeded generator of the example chat dataset (static/examples/chat.jsonl).

The tasks are templated and drawn from a small fixed vocabulary so that a tiny randomly initialised model
(the offline demo base) makes visible progress with LoRA in a couple of hundred steps: the loss falls clearly
and the tuned adapter answers in the right shape ("There are 18 words.") where the random base emits noise.
Row lengths vary widely (long lists, two-exchange conversations) so that padding, packing and length-aware
batching have something real to work on.

Run `python -m jobs.example_data [--out PATH] [--n N] [--seed S]`; the same seed gives byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "static" / "examples" / "chat.jsonl"

# Short lowercase words only: a small closed vocabulary keeps the trained tokenizer (and so the model) tiny.
WORDS: tuple[str, ...] = (
    "cat", "dog", "fox", "owl", "bee", "cow", "pig", "hen", "ant", "bat",
    "red", "blue", "green", "pink", "gold", "gray",
    "apple", "pear", "plum", "lime", "grape", "melon", "lemon", "mango", "peach",
    "sun", "moon", "star", "tree", "rock", "lamp", "book", "ship", "bell",
    "door", "key", "cup", "hat", "box", "rain", "snow", "wind", "fire", "milk",
)  # fmt: skip

SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "You are a careful assistant. Answer exactly.",
    "You are a friendly helper for word and number games.",
)

SYSTEM_SHARE = 0.3
MULTI_TURN_SHARE = 0.25
LONG_LIST_SHARE = 0.25

Task = Callable[[random.Random], tuple[str, str]]


def _list_length(rng: random.Random) -> int:
    # Mostly short lists with a long tail: the tail is what makes rows reach a few hundred tokens.
    if rng.random() < LONG_LIST_SHARE:
        return rng.randint(12, 40)
    return rng.randint(2, 8)


def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def _reverse(rng: random.Random) -> tuple[str, str]:
    words = _words(rng, _list_length(rng))
    prompt = rng.choice(("Reverse the words: {}", "Say these words in reverse order: {}"))
    return prompt.format(" ".join(words)), " ".join(reversed(words))


def _uppercase(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    prompt = rng.choice(("Write the word {} in capital letters.", "Please uppercase the word {}."))
    return prompt.format(word), f"In capital letters, {word} is {word.upper()}."


def _add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    prompt = rng.choice(("What is {} plus {}?", "Add {} and {}."))
    return prompt.format(a, b), f"{a} plus {b} is {a + b}."


def _repeat(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    times = _list_length(rng)
    return f"Repeat the word {word} {times} times.", " ".join([word] * times)


def _spell(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    prompt = rng.choice(("Please spell the word {}.", "Spell {} letter by letter."))
    return prompt.format(word), "-".join(word)


def _sort(rng: random.Random) -> tuple[str, str]:
    numbers = [rng.randint(0, 99) for _ in range(_list_length(rng))]
    prompt = rng.choice(("Sort these numbers: {}", "Put these numbers in order: {}"))
    return prompt.format(" ".join(map(str, numbers))), " ".join(map(str, sorted(numbers)))


def _commas(rng: random.Random) -> tuple[str, str]:
    words = _words(rng, _list_length(rng))
    return f"Join these words with commas: {' '.join(words)}", ", ".join(words)


def _count(rng: random.Random) -> tuple[str, str]:
    words = _words(rng, _list_length(rng))
    plural = "word" if len(words) == 1 else "words"
    return f"How many words are here: {' '.join(words)}", f"There are {len(words)} {plural}."


TASKS: tuple[Task, ...] = (_reverse, _uppercase, _add, _repeat, _spell, _sort, _commas, _count)


def _example(rng: random.Random) -> dict:
    messages: list[dict[str, str]] = []
    if rng.random() < SYSTEM_SHARE:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    exchanges = 2 if rng.random() < MULTI_TURN_SHARE else 1
    for _ in range(exchanges):
        question, answer = rng.choice(TASKS)(rng)
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}


def generate_examples(n: int = 600, seed: int = 0) -> list[dict]:
    """Return `n` chat rows `{"messages": [{"role", "content"}, ...]}`, fully determined by `seed`."""
    # A private Random instance: callers' use of the global `random` state must not change the data.
    rng = random.Random(seed)
    return [_example(rng) for _ in range(n)]


def to_jsonl(rows: list[dict]) -> str:
    """Serialise rows as JSONL text; fixed separators so the bytes depend on the rows only."""
    return "".join(json.dumps(row, ensure_ascii=False, separators=(", ", ": ")) + "\n" for row in rows)


def write_examples(out: Path, n: int = 600, seed: int = 0) -> Path:
    """Write the generated rows to `out` (JSONL, UTF-8, LF line endings) and return the path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a reader never sees a half-written file.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(to_jsonl(generate_examples(n, seed)))
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the example chat dataset as JSONL.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_examples(args.out, args.n, args.seed)
    print(f"wrote {args.n} rows to {path}")


if __name__ == "__main__":
    main()
