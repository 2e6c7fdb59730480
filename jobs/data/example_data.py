"""Seeded generator of the example chat dataset (static/examples/chat.jsonl).

The offline demo base is a tiny randomly initialised model, and a rank-8 LoRA on it cannot learn in a couple of
hundred steps to copy arbitrary words from the prompt (reverse, sort, spell). So most rows are lookup tasks: a
keyword from a small fixed table maps to a fixed answer ("What is the opposite of hot?" -> "cold.", "What sound
does a cow make?" -> "A cow says moo."), asked in several phrasings. Keywords are unique across tables, so the
keyword alone decides the answer and the tuned adapter answers these exactly (even in a phrasing it never saw)
where the random base emits noise. The rest are the word and number games (reverse, sort, count, ...): their
long lists and two-exchange conversations make row lengths vary widely, so that padding, packing and
length-aware batching have something real to work on.

Run `python -m jobs.data.example_data [--out PATH] [--n N] [--seed S]`; the same seed gives byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

from jobs.studio import EXAMPLE_DATASET_FILE

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
LOOKUP_SHARE = 0.7  # share of exchanges drawn from the keyword tables; the rest are the word and number games

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


def _spell(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    prompt = rng.choice(("Please spell the word {}.", "Spell {} letter by letter."))
    return prompt.format(word), "-".join(word)


def _sort(rng: random.Random) -> tuple[str, str]:
    numbers = [rng.randint(0, 99) for _ in range(_list_length(rng))]
    prompt = rng.choice(("Sort these numbers: {}", "Put these numbers in order: {}"))
    return prompt.format(" ".join(map(str, numbers))), " ".join(map(str, sorted(numbers)))


def _count(rng: random.Random) -> tuple[str, str]:
    words = _words(rng, _list_length(rng))
    plural = "word" if len(words) == 1 else "words"
    return f"How many words are here: {' '.join(words)}", f"There are {len(words)} {plural}."


# Keyword tables for the lookup tasks. A keyword appears in one table only, so it alone decides the answer.
OPPOSITES: dict[str, str] = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "day": "night", "wet": "dry",
    "old": "new", "light": "dark", "happy": "sad", "full": "empty",
}  # fmt: skip
COLORS: dict[str, str] = {
    "banana": "yellow", "grass": "green", "sky": "blue", "snow": "white", "coal": "black", "cherry": "red",
    "carrot": "orange", "frog": "green", "tomato": "red", "violet": "purple",
}  # fmt: skip
SOUNDS: dict[str, str] = {
    "cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa", "pig": "oink",
    "owl": "hoot", "lion": "roar", "bee": "buzz", "snake": "hiss",
}  # fmt: skip
LEGS: dict[str, int] = {
    "spider": 8, "wasp": 6, "crab": 10, "hen": 2, "beetle": 6, "goose": 2, "fish": 0, "goat": 4,
    "zebra": 4,
}  # fmt: skip
CAPITALS: dict[str, str] = {  # fictional countries: the answer cannot be guessed, only learned
    "Zorvia": "Kelmar", "Plandor": "Ostrik", "Merovia": "Tallis", "Quenland": "Brisco", "Valdura": "Senn",
    "Karrak": "Dunmoor", "Elvania": "Miralo", "Tobrenia": "Vask",
}  # fmt: skip
DAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _lookup(phrasings: tuple[str, ...], table: dict, answer: str) -> Task:
    def task(rng: random.Random) -> tuple[str, str]:
        key = rng.choice(sorted(table))
        return rng.choice(phrasings).format(key), answer.format(table[key])

    return task


# The keyword ends every phrasing, so it sits at the same distance from the answer whatever the wording; the
# answers never repeat the keyword (copying from the prompt is what the tiny base cannot learn).
_opposite = _lookup(
    ("What is the opposite of {}?", "Give the opposite of {}.", "What is the opposite of the word {}?",
     "Name the opposite of {}.", "Tell me the opposite of {}.", "Opposite of {}?"),
    OPPOSITES, "{}.",
)  # fmt: skip
_color = _lookup(
    ("What color is a {}?", "What colour is a {}?", "Which color is a {}?", "Name the color of a {}.",
     "Tell me the color of a {}.", "Color of a {}?"),
    COLORS, "It is {}.",
)  # fmt: skip
_sound = _lookup(
    ("What sound comes from a {}?", "Which sound is made by a {}?", "What is the sound of a {}?",
     "Name the sound of a {}.", "Tell me the sound of a {}.", "Sound of a {}?"),
    SOUNDS, "It says {}.",
)  # fmt: skip
_legs = _lookup(
    ("How many legs has a {}?", "Count the legs of a {}.", "What is the number of legs of a {}?",
     "Name the number of legs of a {}.", "Tell me the legs of a {}.", "Legs on a {}?"),
    LEGS, "It has {} legs.",
)  # fmt: skip
_capital = _lookup(
    ("What is the capital of {}?", "Name the capital of {}.", "Which city is the capital of {}?",
     "What city is the capital of {}?", "Tell me the capital of {}.", "Capital of {}?"),
    CAPITALS, "{}.",
)  # fmt: skip
_next_day = _lookup(
    ("What day comes after {}?", "Which day follows {}?", "What is the day after {}?",
     "Name the day after {}.", "Tell me the day after {}.", "Day after {}?"),
    {day: DAYS[(i + 1) % len(DAYS)] for i, day in enumerate(DAYS)}, "{}.",
)  # fmt: skip

LOOKUP_TASKS: tuple[Task, ...] = (_opposite, _color, _sound, _legs, _capital, _next_day)
# No repeat or join-with-commas here: long copied answers would swamp the loss of the short lookup answers.
GAME_TASKS: tuple[Task, ...] = (_reverse, _uppercase, _add, _spell, _sort, _count)
TASKS: tuple[Task, ...] = LOOKUP_TASKS + GAME_TASKS


def _example(rng: random.Random) -> dict:
    messages: list[dict[str, str]] = []
    if rng.random() < SYSTEM_SHARE:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    exchanges = 2 if rng.random() < MULTI_TURN_SHARE else 1
    for _ in range(exchanges):
        tasks = LOOKUP_TASKS if rng.random() < LOOKUP_SHARE else GAME_TASKS
        question, answer = rng.choice(tasks)(rng)
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


def write_rows(out: Path, rows: list[dict]) -> Path:
    """Write `rows` to `out` (JSONL, UTF-8, LF line endings) and return the path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a reader never sees a half-written file.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(to_jsonl(rows))
    tmp.replace(out)
    return out


def generator_main(argv: list[str] | None, description: str, default_out: Path, default_n: int,
                   generate: Callable[[int, int], list[dict]]) -> None:
    """The command line of a seeded example-data generator (this one, jobs.data.pirate_data): --out, --n, --seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--n", type=int, default=default_n)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_rows(args.out, generate(args.n, args.seed))
    print(f"wrote {args.n} rows to {path}")


def main(argv: list[str] | None = None) -> None:
    generator_main(argv, "Write the example chat dataset as JSONL.", EXAMPLE_DATASET_FILE, 600, generate_examples)


if __name__ == "__main__":
    main()
