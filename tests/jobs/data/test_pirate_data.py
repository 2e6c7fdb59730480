"""The real offline model's bundled dataset: generated deterministically, exactly what ships, and free of the
held-out questions' topics (so the effect seen in chat is generalization, not recall)."""

import re

from jobs.data.example_data import to_jsonl
from jobs.data.formats import parse_file
from jobs.data.pirate_data import CLOSERS, HELD_OUT_TOPICS, OPENERS, generate_examples
from jobs.studio import PIRATE_DATASET_FILE


def test_the_shipped_file_is_what_the_generator_writes():
    assert PIRATE_DATASET_FILE.read_text(encoding="utf-8") == to_jsonl(generate_examples(1000, 0))
    assert generate_examples(20, 1) == generate_examples(20, 1) != generate_examples(20, 2)


def test_every_answer_is_in_the_voice_and_no_question_touches_a_held_out_topic():
    topics = re.compile(r"\b(" + "|".join(HELD_OUT_TOPICS) + r")s?\b", re.IGNORECASE)
    rows = parse_file(PIRATE_DATASET_FILE).rows
    assert len(rows) == 1000
    for row in rows:
        for message in row["messages"]:
            if message["role"] == "assistant":
                assert message["content"].startswith(OPENERS)
                assert any(closer.strip(", ") in message["content"][-14:] for closer in CLOSERS)
            elif message["role"] == "user":
                assert not topics.search(message["content"])
