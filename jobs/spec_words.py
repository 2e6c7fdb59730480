"""A spec's problems in words, each naming its field, and the words for a field's allowed values, read from the
field's own constraints (`Field(ge=, le=, gt=, lt=)` and a `special` value): the one place a range is put in words,
for the refusals, the form's help, the API docs and the CLI."""

from __future__ import annotations

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
"""pydantic's error types for a number outside its field's bounds: their message is the field's range in words."""


class Problem(BaseModel):
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class SpecError(ValueError):
    """Every problem found in a submission, each naming the field it concerns."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @classmethod
    def from_text(cls, field: str, message: str) -> SpecError:
        return cls([Problem(field=field, message=message)])

    def as_text(self) -> str:
        lines = [f"The job was not queued: {len(self.problems)} problem(s) to fix."]
        lines += [f"- {p.field}: {p.message}" for p in self.problems]
        return "\n".join(lines)


def number_text(value: float) -> str:
    # Round quantities read better grouped (10,000,000); a number like 4294967295 (2^32 - 1) is known ungrouped.
    if float(value).is_integer() and abs(value) >= 10_000 and value % 1000 == 0:
        return f"{int(value):,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def bounds(field: FieldInfo) -> dict[str, float]:
    """The field's numeric constraints by name (ge, gt, le, lt)."""
    found = {}
    for item in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                found[name] = getattr(item, name)
    return found


def special(field: FieldInfo) -> dict | None:
    """A value outside the range that the field also takes, with what it means (max_steps' -1: use num_epochs)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("special")


def _is_whole(field: FieldInfo) -> bool:
    return field.annotation in (int, int | None)


def _interval_words(limits: dict[str, float]) -> str:
    low = ("from", limits["ge"]) if "ge" in limits else ("greater than", limits["gt"]) if "gt" in limits else None
    high = ("to", limits["le"]) if "le" in limits else ("below", limits["lt"]) if "lt" in limits else None
    if low and high and low[0] == "from" and high[0] == "to":
        return f"from {number_text(low[1])} to {number_text(high[1])}"
    low_text = low and ("at least" if low[0] == "from" else "greater than") + f" {number_text(low[1])}"
    high_text = high and ("at most" if high[0] == "to" else "below") + f" {number_text(high[1])}"
    return " and ".join(text for text in (low_text, high_text) if text)


def range_words(field: FieldInfo) -> str | None:
    """The field's allowed numbers in words ("a whole number from 1 to 1024"), or None when it has no bounds."""
    limits = bounds(field)
    if not limits:
        return None
    words = _interval_words(limits)
    if extra := special(field):
        value = extra["value"]  # a number (max_steps' -1) or a word (devices' 'all')
        shown = f"'{value}'" if isinstance(value, str) else number_text(value)
        return f"{shown} ({extra['means']}) or {words}"
    return f"a whole number {words}" if _is_whole(field) else words


def _message(item: dict, fields: dict[str, FieldInfo], name: str) -> str:
    if item["type"] in RANGE_ERRORS and name in fields and (words := range_words(fields[name])):
        return f"must be {words} (got {item['input']})"
    if item["type"] == "string_too_long":  # pydantic's "String should have at most 32000 characters"
        limit, got = item["ctx"]["max_length"], len(item["input"])
        return f"must be at most {number_text(limit)} characters (got {number_text(got)})"
    if item["type"] == "extra_forbidden":
        return "is not a spec field (check the spelling; see docs/api.md)"
    return item["msg"].removeprefix("Value error, ")


def problems_from(error: ValidationError, fields: dict[str, FieldInfo]) -> list[Problem]:
    """One problem per field, named by the spec field (not pydantic's path through union members), ranges in the
    words of `range_words`."""
    messages: dict[str, list[str]] = {}
    for item in error.errors():
        name = (str(item["loc"][0]) or '""') if item["loc"] else "spec"
        message = _message(item, fields, name)
        items = [str(part) for part in item["loc"][1:] if isinstance(part, int)]
        if items:
            message = f"item {items[0]}: {message}"
        if message not in messages.setdefault(name, []):
            messages[name].append(message)
    return [Problem(field=name, message=" or ".join(found)) for name, found in messages.items()]
