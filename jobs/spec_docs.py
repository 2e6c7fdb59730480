"""The spec's reference table in docs/api.md, rendered from `TrainSpec` itself so the two cannot drift.

    python -m jobs.spec_docs docs/api.md     # rewrite the table between its markers
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path

from jobs.spec import TrainSpec, field_label
from jobs.spec_words import range_words

BEGIN, END = "<!-- spec table: python -m jobs.spec_docs docs/api.md -->", "<!-- end of spec table -->"


def _type_text(annotation) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if annotation == str | list[str]:
        return "string or list"
    if type(None) in typing.get_args(annotation):  # an empty field the rule fills per job (jobs.step_plan)
        return f"{_type_text(next(a for a in typing.get_args(annotation) if a is not type(None)))} or null"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # devices: a count or the word 'all'
        return " or ".join(_type_text(member) for member in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation)).replace("list[str]", "list")


def spec_table() -> str:
    lines = ["| field | label in the UI | type | allowed | default | meaning |", "|---|---|---|---|---|---|"]
    for name, field in TrainSpec.model_fields.items():
        lines.append(f"| `{name}` | {field_label(name)} | {_type_text(field.annotation)} | {range_words(field) or ''} "
                     f"| {_default_text(field)} | {field.description} |")
    return "\n".join(lines)


def _default_text(field) -> str:
    default = field.default if field.default_factory is None else field.default_factory()
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if default is None:
        return f"null: {extra.get('empty', 'chosen per job')}"  # `empty`: what null means where no rule chooses
    return f"`{json.dumps(default)}`"


def fields_help() -> str:
    """Every spec field in one line each (name, type, allowed values, default): the CLI's `submit --help`."""
    lines = ["spec fields (docs/api.md has their meaning):"]
    for name, field in TrainSpec.model_fields.items():
        allowed = range_words(field)
        kind = _type_text(field.annotation).replace("\\|", "|").replace("`", "")
        lines.append(f"  {name}: {kind}{f', {allowed}' if allowed else ''}; default {_default_text(field).strip('`')}")
    return "\n".join(lines)


def rewrite(doc: Path) -> None:
    text = doc.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{BEGIN}\n{spec_table()}\n{END}{tail}")


if __name__ == "__main__":
    rewrite(Path(sys.argv[1]))
