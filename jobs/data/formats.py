"""Dataset formats: recognise the format of the records a file holds (jobs.data.readers reads them), check every
row, and normalize each to `{"messages": [...]}`. Every problem is reported, each naming its row or column."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jobs.data.errors import DatasetError, capped
from jobs.data.readers import ReadLimits, read_records

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ParsedDataset:
    format: str
    rows: list[dict]
    """Normalized rows: {"messages": [{"role", "content"}, ...]}."""

    def to_jsonl(self) -> bytes:
        lines = (json.dumps(row, ensure_ascii=False, sort_keys=True) for row in self.rows)
        return ("\n".join(lines) + "\n").encode()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() and _encodable(value) else None


def _encodable(text: str) -> bool:
    """False for text holding an unpaired surrogate (JSON can write "\\ud800"; no UTF-8 can store it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _from_messages(record: dict) -> tuple[list[dict] | None, str | None]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, "'messages' must be a non-empty list of {role, content} objects"
    normalized = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return None, f"message {index} is not an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return None, f"message {index} has role {role!r}; use one of {', '.join(ROLES)}"
        if not isinstance(content, str):
            return None, f"message {index} has no text 'content'"
        if not _encodable(content):
            return None, f"message {index} holds an invalid character (an unpaired surrogate such as \\ud800)"
        normalized.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in normalized):
        return None, "has no non-empty assistant message to learn from"
    return normalized, None


def _invalid_text(record: dict, *columns: str) -> str | None:
    """A problem naming the first column whose text no UTF-8 can store."""
    for column in columns:
        value = record.get(column)
        if isinstance(value, str) and not _encodable(value):
            return f"'{column}' holds an invalid character (an unpaired surrogate such as \\ud800)"
    return None


def _from_prompt_completion(record: dict) -> tuple[list[dict] | None, str | None]:
    if problem := _invalid_text(record, "prompt", "completion"):
        return None, problem
    prompt, completion = _text(record.get("prompt")), _text(record.get("completion"))
    if prompt is None or completion is None:
        return None, "'prompt' and 'completion' must both be non-empty text"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], None


def _from_instruction(record: dict) -> tuple[list[dict] | None, str | None]:
    if problem := _invalid_text(record, "instruction", "input", "output", "system"):
        return None, problem
    instruction, output = _text(record.get("instruction")), _text(record.get("output"))
    if instruction is None or output is None:
        return None, "'instruction' and 'output' must both be non-empty text"
    extra = _text(record.get("input"))
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    if _text(record.get("system")):
        messages.insert(0, {"role": "system", "content": record["system"]})
    return messages, None


# Format name, the columns that identify it, and its row converter: checked in this order.
FORMATS: list[tuple[str, tuple[str, ...], Callable[[dict], tuple[list[dict] | None, str | None]]]] = [
    ("messages", ("messages",), _from_messages),
    ("prompt-completion", ("prompt", "completion"), _from_prompt_completion),
    ("instruction", ("instruction", "output"), _from_instruction),
]


def detect_format(records: list[dict]) -> str:
    columns = set(records[0])
    for name, required, _ in FORMATS:
        if set(required) <= columns:
            return name
    found = ", ".join(sorted(map(str, columns))) or "none"
    wanted = " or ".join("+".join(required) for _, required, _ in FORMATS)
    raise DatasetError([f"missing columns: expected {wanted}; found columns: {found}"])


def parse_records(records: list[dict]) -> ParsedDataset:
    """Convert every row to messages, or raise listing the rows that cannot be."""
    format_name = detect_format(records)
    _, _, convert = next(f for f in FORMATS if f[0] == format_name)
    rows, problems = [], []
    for number, record in enumerate(records, start=1):
        messages, problem = convert(record)
        if problem:
            problems.append(f"row {number}: {problem}")
        else:
            rows.append({"messages": messages})
    if problems:
        raise DatasetError(capped(problems))
    return ParsedDataset(format=format_name, rows=rows)


def parse_file(path: Path, limits: ReadLimits | None = None) -> ParsedDataset:
    return parse_records(read_records(path, limits or ReadLimits()))
