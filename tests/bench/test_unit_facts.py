"""The second small dataset for bench/eval_split.py: chat rows the studio reads, the same for a seed, and answers
whose arithmetic is right (a wrong factor would teach the adapter noise, not a rule)."""

import re

from bench.unit_facts import CONVERSIONS, unit_facts
from jobs.data.formats import parse_records


def test_rows_are_chats_fixed_by_their_seed_with_the_arithmetic_done():
    rows = unit_facts(50, seed=3)
    assert rows == unit_facts(50, seed=3) and rows != unit_facts(50, seed=4)
    assert parse_records(rows).format == "messages"
    factors = {(a, b): f for a, b, f in CONVERSIONS}
    for row in rows:
        amount, source, result, target = re.fullmatch(r"([\d.]+) (\w+) is ([\d.]+) (\w+)\.",
                                                       row["messages"][1]["content"]).groups()
        assert float(result) == round(float(amount) * factors[source, target], 2)
