from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from jobs.data.example_data import generate_examples, main, to_jsonl
from jobs.studio import EXAMPLE_DATASET_FILE
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate_examples()


def test_same_seed_gives_the_same_bytes(tmp_path):
    main(["--out", str(tmp_path / "a.jsonl"), "--n", "50", "--seed", "7"])
    main(["--out", str(tmp_path / "b.jsonl"), "--n", "50", "--seed", "7"])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert len((tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()) == 50


def test_different_seed_gives_different_rows():
    assert to_jsonl(generate_examples(50, seed=0)) != to_jsonl(generate_examples(50, seed=1))


def test_committed_file_is_the_default_output(rows):
    # The quickstart and the demo tokenizer read this file: it must not drift from its generator.
    assert EXAMPLE_DATASET_FILE.read_text(encoding="utf-8") == to_jsonl(rows)


def test_rows_are_chats_with_alternating_turns(rows):
    assert len(rows) == 600
    for row in rows:
        assert list(row) == ["messages"]
        roles = [m["role"] for m in row["messages"]]
        if roles[0] == "system":
            roles = roles[1:]
        assert roles in (["user", "assistant"], ["user", "assistant"] * 2)
        for message in row["messages"]:
            assert set(message) == {"role", "content"}
            assert isinstance(message["content"], str) and message["content"].strip()


def test_mix_has_system_prompts_and_multi_turn_rows(rows):
    with_system = sum(row["messages"][0]["role"] == "system" for row in rows)
    multi_turn = sum(sum(m["role"] == "user" for m in row["messages"]) == 2 for row in rows)
    assert 0.15 * len(rows) < with_system < 0.5 * len(rows)
    assert 0.1 * len(rows) < multi_turn < 0.5 * len(rows)


def test_lengths_spread_widely(rows):
    chars = sorted(sum(len(m["content"]) for m in row["messages"]) for row in rows)
    assert chars[0] < 40
    assert chars[-1] > 400
    assert chars[len(chars) // 2] < 150  # mostly short rows, with a long tail


def test_answers_are_right(rows):
    pairs = [
        (question["content"], answer["content"])
        for row in rows
        for question, answer in zip(row["messages"], row["messages"][1:], strict=False)
        if question["role"] == "user"
    ]
    checked = 0
    for question, answer in pairs:
        if match := re.fullmatch(r"(?:What is (\d+) plus (\d+)\?|Add (\d+) and (\d+)\.)", question):
            a, b = (int(x) for x in match.groups() if x is not None)
            assert answer == f"{a} plus {b} is {a + b}."
            checked += 1
        elif match := re.fullmatch(r"(?:Sort these numbers|Put these numbers in order): ([\d ]+)", question):
            assert answer.split() == [str(n) for n in sorted(map(int, match.group(1).split()))]
            checked += 1
    assert checked > 50


def test_cli_writes_jsonl(tmp_path):
    out = tmp_path / "nested" / "chat.jsonl"
    command = [sys.executable, "-m", "jobs.data.example_data", "--out", str(out), "--n", "5"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == generate_examples(5)
