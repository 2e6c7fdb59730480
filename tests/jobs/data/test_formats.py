import json

import pandas as pd
import pytest

from jobs.data.formats import DatasetError, parse_file
from jobs.data.store import store_parsed

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(("filename", "make", "fmt"), [
    ("d.jsonl", lambda p: _write(p, json.dumps(CHAT) + "\n\n" + json.dumps(CHAT)), "messages"),
    ("d.json", lambda p: _write(p, json.dumps([CHAT, CHAT])), "messages"),
    ("d.json", lambda p: _write(p, json.dumps({"data": [{"prompt": "a", "completion": "b"}]})), "completion"),
    ("d.csv", lambda p: pd.DataFrame({"instruction": ["add", "sub"], "input": ["1 2", ""], "output": ["3", "x"]})
     .to_csv(p, index=False), "alpaca"),
    ("d.csv", lambda p: pd.DataFrame({"messages": [json.dumps(CHAT["messages"])]}).to_csv(p, index=False), "messages"),
    ("d.parquet", lambda p: pd.DataFrame({"prompt": ["q1", "q2"], "completion": ["a1", "a2"]}).to_parquet(p),
     "completion"),
    ("d.parquet", lambda p: pd.DataFrame({"messages": [CHAT["messages"]]}).to_parquet(p), "messages"),
])
def test_formats_normalize_to_messages(tmp_path, filename, make, fmt):
    path = tmp_path / filename
    make(path)
    parsed = parse_file(path)
    assert parsed.format == fmt
    assert all(row["messages"][-1]["role"] == "assistant" for row in parsed.rows)


def test_instruction_input_is_joined_into_the_prompt(tmp_path):
    path = _write(tmp_path / "d.json", json.dumps([{"instruction": "add", "input": "1 2", "output": "3"}]))
    assert parse_file(path).rows[0]["messages"][0]["content"] == "add\n\n1 2"


@pytest.mark.parametrize(("filename", "content", "words"), [
    ("d.jsonl", "", "empty"),
    ("d.jsonl", "\n\n", "no rows"),
    ("d.jsonl", '{"messages": []}\n{broken', "line 2: not valid JSON"),
    ("d.jsonl", '[1, 2]\n', "line 1: expected a JSON object"),
    ("d.json", '{"messages": [', "not valid JSON"),
    ("d.jsonl", '{"foo": "a", "bar": "b"}\n', "missing columns"),
    ("d.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n', "row 1: has no non-empty assistant message"),
    ("d.jsonl", '{"messages": [{"role": "robot", "content": "hi"}]}\n', "role 'robot'"),
    ("d.jsonl", '{"prompt": "", "completion": "b"}\n', "row 1: 'prompt' and 'completion'"),
    ("d.txt", "hello", "not supported"),
    ("d.parquet", "not parquet", "could not read the Parquet"),
])
def test_bad_files_are_explained(tmp_path, filename, content, words):
    path = _write(tmp_path / filename, content)
    with pytest.raises(DatasetError) as caught:
        parse_file(path)
    assert any(words in problem for problem in caught.value.problems), caught.value.problems


def test_every_bad_row_is_listed(tmp_path):
    rows = [CHAT, {"messages": [{"role": "user", "content": "q"}]}, CHAT, {"messages": "nope"}]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DatasetError) as caught:
        parse_file(path)
    assert [p.split(":")[0] for p in caught.value.problems] == ["row 2", "row 4"]


def test_stored_copy_is_content_addressed(tmp_path):
    path = _write(tmp_path / "d.jsonl", json.dumps(CHAT))
    first, digest = store_parsed(parse_file(path), tmp_path / "store")
    second, again = store_parsed(parse_file(path), tmp_path / "store")
    assert first == second and digest == again and first.name == f"{digest}.jsonl"


def test_formats_are_detected_in_their_documented_order():
    """docs/api.md names the order: preference, unpaired and reference before completion, so prompt/completion/label
    is KTO's unpaired data and prompt/reference GRPO's, never plain prompt/completion."""
    from jobs.data.formats import FORMATS, propose_mapping

    assert FORMATS == ("messages", "sharegpt", "alpaca", "preference", "unpaired", "reference", "completion", "text")
    columns = {"preference": {"prompt": "q", "chosen": "a", "rejected": "b", "completion": "c", "label": True},
               "unpaired": {"prompt": "q", "completion": "a", "label": False, "text": "t", "reference": "r"},
               "reference": {"prompt": "q", "reference": "r", "completion": "a", "text": "t"},
               "completion": {"prompt": "q", "completion": "a", "text": "t"}}
    assert {fmt: propose_mapping([record]).format for fmt, record in columns.items()} == {
        fmt: fmt for fmt in columns}


def test_an_unpaired_file_reads_labels_and_previews_as_desirable_or_not(tmp_path):
    from jobs.data.preview import render_row

    path = pd.DataFrame({"prompt": ["2+2?", "3+3?"], "completion": ["4", "7"], "label": ["true", "0"]})
    path.to_csv(tmp_path / "d.csv", index=False)
    parsed = parse_file(tmp_path / "d.csv")
    assert parsed.format == "unpaired" and [row["label"] for row in parsed.rows] == [True, False]
    assert parsed.rows[1]["completion"] == [{"role": "assistant", "content": "7"}]
    assert render_row(None, parsed.rows[1]).startswith("undesirable:\n[user] 3+3?\n[assistant] 7")
    _write(tmp_path / "bad.jsonl", json.dumps({"prompt": "q", "completion": "a", "label": "maybe"}))
    with pytest.raises(DatasetError, match="row 1: 'label' must be true"):
        parse_file(tmp_path / "bad.jsonl")


def test_prompt_and_reference_rows_are_the_reference_format_for_grpo():
    from jobs.data.formats import REFERENCE, parse_records
    from jobs.data.preview import render_row

    parsed = parse_records([{"question": "2+2?", "reference": "4"},
                            {"question": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "3+3?"}], "reference": "6"}])
    assert parsed.format == REFERENCE and parsed.rows[0] == {"prompt": [{"role": "user", "content": "2+2?"}],
                                                             "reference": "4"}
    assert render_row(None, parsed.rows[1]) == "[system] Be brief.\n[user] 3+3?\nreference:\n6"
    # Detection order: chosen/rejected make a preference file, a completion without a reference stays completion.
    assert parse_records([{"prompt": "a", "reference": "b", "chosen": "c", "rejected": "d"}]).format == "preference"
    assert parse_records([{"prompt": "a", "completion": "b"}]).format == "completion"
    with pytest.raises(DatasetError, match="row 1: 'reference' must be non-empty text"):
        parse_records([{"prompt": "a", "reference": " "}])


def _conversation(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


def test_whole_conversations_without_a_prompt_share_their_opening_turns_as_the_prompt(tmp_path):
    """TRL's implicit prompt: chosen and rejected are two whole conversations; the turns both open with are the
    prompt (TRL's extract_prompt), so the rows read as explicit ones do."""
    opening = (("system", "Be brief."), ("user", "Hi."), ("assistant", "Hello."), ("user", "2+2?"))
    rows = [{"chosen": _conversation(*opening, ("assistant", "4.")),
             "rejected": _conversation(*opening, ("assistant", "Five, or so."))}]
    _write(tmp_path / "pairs.jsonl", "\n".join(map(json.dumps, rows)))
    parsed = parse_file(tmp_path / "pairs.jsonl")
    assert parsed.format == "preference" and parsed.mapping.columns == {"chosen": "chosen", "rejected": "rejected"}
    assert parsed.rows == [{"prompt": _conversation(*opening), "chosen": _conversation(("assistant", "4.")),
                            "rejected": _conversation(("assistant", "Five, or so."))}]


def test_conversations_that_share_no_prompt_are_refused_naming_the_row(tmp_path):
    good = {"chosen": _conversation(("user", "Hi."), ("assistant", "Hello.")),
            "rejected": _conversation(("user", "Hi."), ("assistant", "Go away."))}
    apart = {"chosen": _conversation(("user", "Hi."), ("assistant", "Hello.")),
             "rejected": _conversation(("user", "Bye."), ("assistant", "Go away."))}
    parted_at_a_user_turn = {"chosen": _conversation(("system", "S."), ("user", "A?"), ("assistant", "a")),
                             "rejected": _conversation(("system", "S."), ("user", "B?"), ("assistant", "b"))}
    _write(tmp_path / "pairs.jsonl", "\n".join(map(json.dumps, [good, apart, parted_at_a_user_turn])))
    with pytest.raises(DatasetError) as refused:
        parse_file(tmp_path / "pairs.jsonl")
    assert [problem.split(":")[0] for problem in refused.value.problems] == ["row 2", "row 3"]
    assert "share no opening turns" in refused.value.problems[0]
    assert "share 1 opening turn(s) not ending with a user message" in refused.value.problems[1]
