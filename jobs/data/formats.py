"""Dataset formats: what the records of a file mean (jobs.data.readers reads them), as a format and a column
mapping, proposed from the columns found and overridable by the person; every row checked and normalized to
`{"messages": [...]}` (chat formats) or `{"text": ...}` (raw text, for continued pre-training). Every problem is
reported, each naming its row or column.

| format | roles (default column) | becomes |
|---|---|---|
| messages | messages: [{role, content}] | as is |
| sharegpt | conversations: [{from, value}] (human/user, gpt/assistant, system) | messages |
| alpaca | instruction, input (optional), output, system (optional) | (system +) user + assistant |
| completion | prompt, completion | user + assistant |
| text | text | text (loss on every token) |
| preference | prompt (optional), chosen, rejected (text or message lists) | the three as messages (DPO, ORPO, SimPO) |
| unpaired | prompt, completion (text or message lists), label (true/false) | both as messages, label (KTO) |
| reference | prompt (text or message list), reference (text) | prompt as messages, reference as text (GRPO) |

A file's format is proposed by trying the formats in FORMATS' order (the table's, but preference, unpaired and
reference come before completion): the first whose columns are all there wins, so a prompt/completion/label file is
unpaired and a prompt/reference file is reference, never plain completion. A preference file without a prompt column
holds whole conversations in chosen and rejected (TRL's implicit prompt): the turns both open with become the prompt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jobs.data.errors import DatasetError, capped
from jobs.data.readers import ReadLimits, read_records
from jobs.spec import encodable

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "model": "assistant", "bot": "assistant"}
# Each format's roles, in order, with the columns that name each role when the file's own names differ; a
# (format, role) in OPTIONAL may be missing.
FORMAT_ROLES: dict[str, dict[str, tuple[str, ...]]] = {
    "messages": {"messages": ("messages",)},
    "sharegpt": {"conversations": ("conversations", "conversation", "dialogue")},
    "alpaca": {"instruction": ("instruction", "question", "query", "task"), "input": ("input", "context"),
               "output": ("output", "answer", "response", "solution"), "system": ("system", "system_prompt")},
    # Before completion: a preference file has a prompt column too, and its chosen/rejected make it one.
    "preference": {"prompt": ("prompt", "question"), "chosen": ("chosen",), "rejected": ("rejected",)},
    # Before completion too: prompt and completion with a label are KTO's unpaired answers, not SFT rows.
    "unpaired": {"prompt": ("prompt", "question"), "completion": ("completion",),
                 "label": ("label", "desirable")},
    # Before completion too: a prompt with the answer to check against, not one to imitate (GRPO's rewards).
    "reference": {"prompt": ("prompt", "question"), "reference": ("reference", "ground_truth")},
    "completion": {"prompt": ("prompt",), "completion": ("completion",)},
    "text": {"text": ("text", "content", "document")},
}
OPTIONAL = {("alpaca", "input"), ("alpaca", "system"), ("preference", "prompt")}
"""A preference file without a prompt column holds whole conversations in chosen and rejected (TRL's implicit prompt):
the turns they share are the prompt."""
FORMATS = tuple(FORMAT_ROLES)
Converter = Callable[[dict, dict[str, str]], tuple[dict | None, str | None]]


@dataclass(frozen=True)
class Mapping:
    """A format and, for each of its roles, the file's column that holds it."""

    format: str
    columns: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"format": self.format, "columns": dict(self.columns)}


@dataclass(frozen=True)
class ParsedDataset:
    format: str
    rows: list[dict]
    """Normalized rows: {"messages": [{"role", "content"}, ...]}, {"text": ...}, {"prompt", "chosen", "rejected"}
    (message lists) or {"prompt", "completion" (message lists), "label" (bool)}."""
    mapping: Mapping | None = None

    def to_jsonl(self) -> bytes:
        lines = (json.dumps(row, ensure_ascii=False, sort_keys=True) for row in self.rows)
        return ("\n".join(lines) + "\n").encode()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() and encodable(value) else None


def _invalid_text(record: dict, columns: list[str]) -> str | None:
    """A problem naming the first column whose text no UTF-8 can store."""
    for column in columns:
        value = record.get(column)
        if isinstance(value, str) and not encodable(value):
            return f"'{column}' holds an invalid character (an unpaired surrogate such as \\\\ud800)"
    return None


def _checked_messages(messages: list[dict]) -> tuple[list[dict] | None, str | None]:
    normalized = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return None, f"message {index} has role {role!r}; use one of {', '.join(ROLES)}"
        if not isinstance(content, str):
            return None, f"message {index} has no text 'content'"
        if not encodable(content):
            return None, f"message {index} holds an invalid character (an unpaired surrogate such as \\ud800)"
        normalized.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in normalized):
        return None, "has no non-empty assistant message to learn from"
    return normalized, None


def _from_messages(record: dict, columns: dict[str, str]) -> tuple[dict | None, str | None]:
    messages = record.get(columns["messages"])
    if not isinstance(messages, list) or not messages:
        return None, f"'{columns['messages']}' must be a non-empty list of {{role, content}} objects"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return None, f"message {index} is not an object"
    messages, problem = _checked_messages(messages)
    return (None, problem) if problem else ({"messages": messages}, None)


def _from_sharegpt(record: dict, columns: dict[str, str]) -> tuple[dict | None, str | None]:
    turns = record.get(columns["conversations"])
    if not isinstance(turns, list) or not turns:
        return None, f"'{columns['conversations']}' must be a non-empty list of {{from, value}} objects"
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return None, f"turn {index} is not an object"
        speaker = turn.get("from", turn.get("role"))
        if speaker not in SHAREGPT_ROLES:
            return None, f"turn {index} is from {speaker!r}; use one of human, gpt, system"
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value", turn.get("content"))})
    messages, problem = _checked_messages(messages)
    return (None, problem) if problem else ({"messages": messages}, None)


def _from_alpaca(record: dict, columns: dict[str, str]) -> tuple[dict | None, str | None]:
    if problem := _invalid_text(record, list(columns.values())):
        return None, problem
    instruction, output = _text(record.get(columns["instruction"])), _text(record.get(columns["output"]))
    if instruction is None or output is None:
        return None, f"'{columns['instruction']}' and '{columns['output']}' must both be non-empty text"
    extra = _text(record.get(columns.get("input", "")))
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    if system := _text(record.get(columns.get("system", ""))):
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}, None


def _from_completion(record: dict, columns: dict[str, str]) -> tuple[dict | None, str | None]:
    if problem := _invalid_text(record, list(columns.values())):
        return None, problem
    prompt, completion = _text(record.get(columns["prompt"])), _text(record.get(columns["completion"]))
    if prompt is None or completion is None:
        return None, f"'{columns['prompt']}' and '{columns['completion']}' must both be non-empty text"
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}, None


def _from_text(record: dict, columns: dict[str, str]) -> tuple[dict | None, str | None]:
    if problem := _invalid_text(record, [columns["text"]]):
        return None, problem
    text = _text(record.get(columns["text"]))
    return ({"text": text}, None) if text is not None else (None, f"'{columns['text']}' must be non-empty text")


def _turns(value: object, role: str) -> tuple[list[dict] | None, str | None]:
    """A preference column as messages: plain text becomes one `role` message; a list is checked as messages."""
    if isinstance(value, str):
        return ([{"role": role, "content": value}], None) if _text(value) else (None, "is empty")
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        return None, "must be text or a non-empty list of {role, content} objects"
    turns = []
    for index, message in enumerate(value):
        if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            return None, f"message {index} needs a role ({', '.join(ROLES)}) and text content"
        if not encodable(message["content"]):
            return None, f"message {index} holds an invalid character (an unpaired surrogate such as \\ud800)"
        turns.append({"role": message["role"], "content": message["content"]})
    return turns, None


def _from_preference(record: dict, columns: dict[str, str]) -> tuple[dict | None, str | None]:
    row = {}
    parts = (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant"))
    implicit = "prompt" not in columns
    for part, role in parts[1:] if implicit else parts:
        turns, problem = _turns(record.get(columns[part]), role)
        if problem:
            return None, f"'{columns[part]}' {problem}"
        row[part] = turns
    if implicit:
        row, problem = _implicit_prompt(row, columns)
        if problem:
            return None, problem
    for part in ("chosen", "rejected"):
        if row[part][-1]["role"] != "assistant" or not row[part][-1]["content"].strip():
            return None, f"'{columns[part]}' must end with a non-empty assistant message"
    if row["prompt"][-1]["role"] != "user":
        return None, f"'{columns['prompt']}' must end with a user message"
    if row["chosen"] == row["rejected"]:
        return None, "chosen and rejected are the same answer"
    return row, None


def _implicit_prompt(row: dict, columns: dict[str, str]) -> tuple[dict, str | None]:
    """Whole chosen and rejected conversations split into their shared opening turns (the prompt) and the two
    answers, by TRL's own extract_prompt (what its trainers do to such rows), checked here so that a pair sharing no
    prompt is refused at import, naming its row, rather than trained on with an empty one."""
    from trl.data_utils import extract_prompt  # only for a file that needs it: trl brings torch

    split = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
    if not split["prompt"] or split["prompt"][-1]["role"] != "user":
        shared = len(split["prompt"])
        how = f"{shared} opening turn(s) not ending with a user message" if shared else "no opening turns"
        return row, (f"'{columns['chosen']}' and '{columns['rejected']}' are whole conversations (no prompt column) "
                     f"but share {how}: start both with the same turns up to the last user message, or give a "
                     "'prompt' column")
    return {"prompt": split["prompt"], "chosen": split["chosen"], "rejected": split["rejected"]}, None


LABEL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
"""How a label written as text (a CSV cell) reads."""


def _label(value: object) -> bool | None:
    """A row's label as a bool: true/false, 1/0, or those words (a CSV has no booleans); None: not a label."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return LABEL_WORDS.get(value.strip().lower())
    return None


def _from_unpaired(record: dict, columns: dict[str, str]) -> tuple[dict | None, str | None]:
    row = {}
    for part, role in (("prompt", "user"), ("completion", "assistant")):
        turns, problem = _turns(record.get(columns[part]), role)
        if problem:
            return None, f"'{columns[part]}' {problem}"
        row[part] = turns
    if row["completion"][-1]["role"] != "assistant" or not row["completion"][-1]["content"].strip():
        return None, f"'{columns['completion']}' must end with a non-empty assistant message"
    if row["prompt"][-1]["role"] != "user":
        return None, f"'{columns['prompt']}' must end with a user message"
    label = _label(record.get(columns["label"]))
    if label is None:
        return None, (f"'{columns['label']}' must be true (a desirable answer) or false (an undesirable one); got "
                      f"{str(record.get(columns['label']))[:40]!r}")
    row["label"] = label
    return row, None


def _from_reference(record: dict, columns: dict[str, str]) -> tuple[dict | None, str | None]:
    prompt, problem = _turns(record.get(columns["prompt"]), "user")
    if problem:
        return None, f"'{columns['prompt']}' {problem}"
    if prompt[-1]["role"] != "user":
        return None, f"'{columns['prompt']}' must end with a user message"
    if problem := _invalid_text(record, [columns["reference"]]):
        return None, problem
    reference = _text(record.get(columns["reference"]))
    if reference is None:
        return None, f"'{columns['reference']}' must be non-empty text"
    return {"prompt": prompt, "reference": reference}, None


CONVERTERS: dict[str, Converter] = {"messages": _from_messages, "sharegpt": _from_sharegpt, "alpaca": _from_alpaca,
                                    "completion": _from_completion, "text": _from_text,
                                    "preference": _from_preference, "unpaired": _from_unpaired,
                                    "reference": _from_reference}
PREFERENCE = "preference"
"""Rows of a prompt with a chosen and a rejected answer: DPO, ORPO and SimPO train on them, SFT cannot."""
UNPAIRED = "unpaired"
"""Rows of a prompt with one answer labelled desirable (true) or not (false): KTO trains on them, SFT cannot."""
REFERENCE = "reference"
"""Rows of a prompt and the reference its answer is checked against: GRPO's rewards read them, SFT cannot."""


def propose_mapping(records: list[dict]) -> Mapping | None:
    """The first format whose required roles all have a column among those found (exact names first, then the
    usual alternatives), or None."""
    columns = {str(name) for record in records[:50] for name in record}
    for format_name, roles in FORMAT_ROLES.items():
        found = {}
        for role, candidates in roles.items():
            match = next((name for name in candidates if name in columns), None)
            if match:
                found[role] = match
        if all(role in found for role in roles if (format_name, role) not in OPTIONAL):
            return Mapping(format_name, found)
    return None


def mapping_problems(mapping: Mapping, columns: set[str]) -> list[str]:
    """What is wrong with a mapping chosen by a person, given the columns the file has."""
    if mapping.format not in FORMAT_ROLES:
        return [f"format: '{mapping.format}' is not one of {', '.join(FORMATS)}"]
    roles = FORMAT_ROLES[mapping.format]
    problems = [f"columns: '{role}' is not a role of the {mapping.format} format" for role in mapping.columns
                if role not in roles]
    for role in roles:
        column = mapping.columns.get(role)
        if column is None and (mapping.format, role) not in OPTIONAL:
            problems.append(f"columns: the {mapping.format} format needs a column for '{role}'")
        elif column is not None and column not in columns:
            problems.append(f"columns: no column '{column}' in the file (it has: {', '.join(sorted(columns))})")
    return problems


def parse_records(records: list[dict], mapping: Mapping | None = None) -> ParsedDataset:
    """Convert every row as `mapping` (or the proposed one) says, or raise listing the rows that cannot be."""
    columns = {str(name) for record in records for name in record}
    if mapping is None:
        mapping = propose_mapping(records)
        if mapping is None:
            wanted = "; ".join(f"{name}: {'+'.join(r for r in roles if (name, r) not in OPTIONAL)}"
                               for name, roles in FORMAT_ROLES.items())
            raise DatasetError([f"missing columns: expected one of ({wanted}); found columns: "
                                f"{', '.join(sorted(columns)) or 'none'}. Choose a format and map the columns"])
    elif problems := mapping_problems(mapping, columns):
        raise DatasetError(problems)
    convert = CONVERTERS[mapping.format]
    rows, problems = [], []
    for number, record in enumerate(records, start=1):
        row, problem = convert(record, mapping.columns)
        if problem:
            problems.append(f"row {number}: {problem}")
        else:
            rows.append(row)
    if problems:
        raise DatasetError(capped(problems))
    return ParsedDataset(format=mapping.format, rows=rows, mapping=mapping)


def parse_file(path: Path, limits: ReadLimits | None = None, mapping: Mapping | None = None) -> ParsedDataset:
    return parse_records(read_records(path, limits or ReadLimits()), mapping)
