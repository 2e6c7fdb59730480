"""A second small dataset, unlike the bundled pirate chats: terse unit conversions with the arithmetic done, in one
fixed answer shape ("12 km is 7.46 miles."). Each question's numbers are new, so the rows a job never saw measure
whether an adapter learned the shape and the rule or memorised its rows. Deterministic for a seed.

    python bench/unit_facts.py --rows 400 --out unit_facts.jsonl"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CONVERSIONS = (
    ("km", "miles", 0.621371), ("miles", "km", 1.609344), ("kg", "pounds", 2.204623), ("pounds", "kg", 0.453592),
    ("litres", "gallons", 0.264172), ("gallons", "litres", 3.785412), ("metres", "feet", 3.280840),
    ("feet", "metres", 0.3048), ("inches", "cm", 2.54), ("cm", "inches", 0.393701),
)
ASKS = ("Convert {n} {a} to {b}.", "How many {b} is {n} {a}?", "{n} {a} in {b}, please.", "What is {n} {a} in {b}?")


def unit_facts(rows: int, seed: int = 7) -> list[dict]:
    pick = random.Random(seed)
    out = []
    for _ in range(rows):
        source, target, factor = pick.choice(CONVERSIONS)
        amount = pick.choice((pick.randint(1, 99), pick.randint(100, 999), round(pick.uniform(0.5, 50), 1)))
        question = pick.choice(ASKS).format(n=amount, a=source, b=target)
        answer = f"{amount} {source} is {amount * factor:.2f} {target}."
        out.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return out


def write_unit_facts(path: Path, rows: int, seed: int = 7) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in unit_facts(rows, seed)))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("unit_facts.jsonl"))
    args = parser.parse_args()
    print(f"wrote {write_unit_facts(args.out, args.rows, args.seed)}")
