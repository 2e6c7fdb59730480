"""Presets: named partial specs a person saves, loads and shares as JSON or YAML files.

A preset holds only spec fields, validated like a submission (every problem at once, each naming its field), and
lives in the data dir's presets folder as `<name>.json`; its name is checked like an adapter's, so it can never
name a path."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from jobs.spec import SpecError, TrainSpec, name_problem, parse_spec
from storage.files import write_atomically

SUFFIXES = (".json", ".yaml", ".yml")


class PresetError(ValueError):
    """Every problem with a preset, in words, each naming its field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def presets_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "presets"


def parse_preset(text: str, suffix: str) -> dict:
    """A preset's fields from JSON or YAML text. Raises PresetError listing every problem."""
    try:
        values = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except RecursionError:
        raise PresetError(["file: nested too deeply"]) from None
    except (ValueError, yaml.YAMLError) as error:
        raise PresetError([f"file: not valid {'JSON' if suffix == '.json' else 'YAML'} ({error})"]) from None
    if not isinstance(values, dict):
        raise PresetError(["file: a preset is a mapping of spec fields to values"])
    try:
        spec = parse_spec(values)
    except SpecError as error:
        raise PresetError([str(problem) for problem in error.problems]) from None
    return {name: getattr(spec, name) for name in values if name in TrainSpec.model_fields}


def save_preset(data_dir: Path, name: str, values: dict) -> Path:
    name = (name or "").strip()
    if problem := name_problem(name):
        raise PresetError([f"name: {problem}"])
    fields = parse_preset(json.dumps(values), ".json")
    target = presets_dir(data_dir) / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, json.dumps(fields, indent=2))
    return target


def preset_names(data_dir: Path) -> list[str]:
    return sorted(p.stem for p in presets_dir(data_dir).glob("*.json"))


def preset_file(data_dir: Path, name: str) -> Path:
    """The saved preset's file; PresetError when there is none by that name."""
    if name not in preset_names(data_dir):
        raise PresetError([f"preset: no preset named '{name}'"])
    return presets_dir(data_dir) / f"{name}.json"


def load_preset(data_dir: Path, name: str) -> dict:
    return parse_preset(preset_file(data_dir, name).read_text(), ".json")
