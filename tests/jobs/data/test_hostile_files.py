"""Hostile dataset files: each is refused with its line or row named, never a crash, never silently 'fixed'. And a
property: whatever bytes a file holds, reading it gives rows or a DatasetError, quickly and in little memory."""

import json
import time
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.data.errors import DatasetError
from jobs.data.formats import parse_file
from jobs.data.readers import ReadLimits

DEEP = 100_000


def _refused(path, limits=None) -> list[str]:
    with pytest.raises(DatasetError) as caught:
        parse_file(path, limits)
    return caught.value.problems


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize(("name", "content", "words"), [
    ("deep.jsonl", '{"messages": ' + "[" * DEEP + "]" * DEEP + "}\n", "line 1: not valid JSON (nested too deeply)"),
    ("deep.json", "[" * DEEP + "]" * DEEP, "not valid JSON (nested too deeply)"),
    ("deep.csv", 'messages\n"' + "[" * DEEP + "]" * DEEP + '"\n', "row 1: 'messages' must be a non-empty list"),
    ("surrogate.jsonl", '{"prompt": "\\ud800", "completion": "a"}\n', "row 1: 'prompt' holds an invalid character"),
    ("surrogate-chat.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
     '"content": "x\\udfff"}]}\n', "row 1: message 1 holds an invalid character"),
    ("latin1.jsonl", b'{"prompt": "ok", "completion": "ok"}\n{"prompt": "caf\xe9", "completion": "x"}\n',
     "line 2: not UTF-8 text (byte 0xe9 at column 16)"),
    ("latin1.csv", b"prompt,completion\nok,ok\ncaf\xe9,x\n", "line 3: not UTF-8 text (byte 0xe9)"),
    ("latin1.json", b'[{"prompt": "ok", "completion": "ok"},\n{"prompt": "caf\xe9", "completion": "x"}]',
     "line 2: not UTF-8 text (byte 0xe9)"),
    ("picture.csv", b"\x89PNG\r\n\x1a\n" + bytes(64), "the file is not text: it looks like a PNG image"),
    ("nul.jsonl", b'{"prompt": "a\x00", "completion": "b"}\n', "the file is not text"),
    ("array.jsonl", "[1, 2]\n", "line 1: expected a JSON object, got list"),
    ("cells.csv", "prompt,completion\na,b,c\n", "row 1: more cells than the header has columns"),
])
def test_hostile_files_are_refused_naming_the_place(tmp_path, name, content, words):
    problems = _refused(_write(tmp_path, name, content))
    assert any(words in problem for problem in problems), problems


def test_a_parquet_messages_column_of_strings_is_refused(tmp_path):
    path = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"messages": [["hello", "there"]]}), path)
    assert _refused(path) == ["row 1: message 0 is not an object"]


def test_caps_are_checked_while_reading(tmp_path):
    row = json.dumps({"prompt": "q", "completion": "a"}) + "\n"
    many = _write(tmp_path, "many.jsonl", row * 50)
    assert "more than 10 rows" in _refused(many, ReadLimits(max_rows=10))[0]
    assert "the file has 1,750 bytes; uploads are capped at 100" in _refused(many, ReadLimits(max_bytes=100))[0]
    long_line = _write(tmp_path, "long.jsonl", row + json.dumps({"prompt": "q" * 500, "completion": "a"}) + "\n")
    assert _refused(long_line, ReadLimits(max_line_bytes=100)) == [
        "line 2: longer than 100 bytes (STUDIO_MAX_LINE_BYTES)"]
    table = tmp_path / "many.parquet"
    pq.write_table(pa.table({"prompt": ["q"] * 50, "completion": ["a"] * 50}), table)
    assert "more than 10 rows" in _refused(table, ReadLimits(max_rows=10))[0]


SUFFIXES = st.sampled_from([".jsonl", ".json", ".csv", ".parquet"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
ROWS = st.lists(st.dictionaries(st.sampled_from(["messages", "prompt", "completion", "instruction", "output", "role",
                                                 "content", "x"]), JSON_VALUES, max_size=4), max_size=6)


def _bounded(path) -> None:
    """Read the file: rows or DatasetError, nothing else, in well under a second and a few MB."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        parse_file(path, ReadLimits(max_bytes=1 << 20, max_line_bytes=1 << 16, max_rows=1000))
    except DatasetError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.monotonic() - started < 2 and peak < 64 << 20


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000), suffix=SUFFIXES)
def test_any_bytes_give_rows_or_a_dataset_error(tmp_path, data, suffix):
    _bounded(_write(tmp_path, f"upload{suffix}", data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, as_lines=st.booleans())
def test_any_json_documents_give_rows_or_a_dataset_error(tmp_path, rows, as_lines):
    text = "\n".join(json.dumps(r) for r in rows) if as_lines else json.dumps(rows)
    _bounded(_write(tmp_path, "upload.jsonl" if as_lines else "upload.json", text))
