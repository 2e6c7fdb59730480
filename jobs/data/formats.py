"""Dataset formats: read an uploaded file, recognise its format, check every row, and normalize each to
`{"messages": [...]}`. Every problem is reported, each naming its row or column. Nothing here imports torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
TEXT_SUFFIXES = (".jsonl", ".json", ".csv")
SNIFF_BYTES = 8192
# What a file that should be text but is not usually is: its first bytes say so.
KNOWN_BINARY = {
    b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (or an Office document)", b"\x1f\x8b": "a gzip archive", b"PAR1": "a Parquet file",
    b"SQLite format 3": "an SQLite database",
}
ROLES = ("system", "user", "assistant")
MAX_REPORTED_PROBLEMS = 20


class DatasetError(ValueError):
    """Every problem found in a dataset file, in words, each naming the row or column."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))

    def as_text(self) -> str:
        return "The dataset was not accepted:\n" + "\n".join(f"- {p}" for p in self.problems)


@dataclass(frozen=True)
class ParsedDataset:
    format: str
    rows: list[dict]
    """Normalized rows: {"messages": [{"role", "content"}, ...]}."""

    def to_jsonl(self) -> bytes:
        lines = (json.dumps(row, ensure_ascii=False, sort_keys=True) for row in self.rows)
        return ("\n".join(lines) + "\n").encode()


def read_records(path: Path) -> list[dict]:
    """Rows of a JSONL, JSON (list of objects), CSV or Parquet file as dicts."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError([f"file type '{suffix or path.name}' is not supported; use {', '.join(SUFFIXES)}"])
    if path.stat().st_size == 0:
        raise DatasetError(["the file is empty"])
    if suffix in TEXT_SUFFIXES and (what := _binary_kind(path)):
        raise DatasetError([f"the file is not text: it looks like {what}, not {suffix[1:].upper()}. Upload JSONL, "
                            f"JSON, CSV or Parquet"])
    readers: dict[str, Callable[[Path], list[dict]]] = {
        ".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    records = readers[suffix](path)
    if not records:
        raise DatasetError(["the file holds no rows"])
    return records


def _binary_kind(path: Path) -> str | None:
    """What a supposed text file really is, when its first bytes show it is binary; None for text."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    for magic, what in KNOWN_BINARY.items():
        if head.startswith(magic):
            return what
    return "binary data (or text in an encoding other than UTF-8)" if b"\x00" in head else None


def _read_jsonl(path: Path) -> list[dict]:
    records, problems = [], []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number}: expected a JSON object, got {type(record).__name__}")
            continue
        records.append(record)
    if problems:
        raise DatasetError(_capped(problems))
    return records


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as error:
        raise DatasetError([f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"]) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise DatasetError(["a .json dataset must be a list of objects (or {\"data\": [...]})"])
    return data


def _read_csv(path: Path) -> list[dict]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError([f"could not read the CSV: {error}"]) from None
    return _frame_records(frame)


def _read_parquet(path: Path) -> list[dict]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several unrelated types for a corrupt file
        raise DatasetError([f"could not read the Parquet file: {error}"]) from None
    return _frame_records(frame)


def _frame_records(frame) -> list[dict]:
    records = frame.to_dict(orient="records")
    for record in records:
        messages = record.get("messages")
        if isinstance(messages, str):
            # CSV cells carry messages as JSON text; decoding errors are reported per row later.
            try:
                record["messages"] = json.loads(messages)
            except json.JSONDecodeError:
                pass
        elif messages is not None and hasattr(messages, "tolist"):
            record["messages"] = [dict(m) for m in messages.tolist()]
    return records


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_REPORTED_PROBLEMS:
        return problems
    hidden = len(problems) - MAX_REPORTED_PROBLEMS
    return problems[:MAX_REPORTED_PROBLEMS] + [f"... and {hidden} more problem(s) of the same kinds"]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


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
        normalized.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in normalized):
        return None, "has no non-empty assistant message to learn from"
    return normalized, None


def _from_prompt_completion(record: dict) -> tuple[list[dict] | None, str | None]:
    prompt, completion = _text(record.get("prompt")), _text(record.get("completion"))
    if prompt is None or completion is None:
        return None, "'prompt' and 'completion' must both be non-empty text"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], None


def _from_instruction(record: dict) -> tuple[list[dict] | None, str | None]:
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
        raise DatasetError(_capped(problems))
    return ParsedDataset(format=format_name, rows=rows)


def parse_file(path: Path) -> ParsedDataset:
    return parse_records(read_records(path))
