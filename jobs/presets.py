"""Presets: named partial specs a person saves, loads and shares as JSON or YAML files.

A preset holds only spec fields, validated like a submission (every problem at once, each naming its field), and is
a row of the ledger owned by the person who saved it: private to them unless an admin shares it with everyone. A
preset is named by its name among one's own, and as `owner/name` among the shared ones of others; a name is checked
like an adapter's, so it can never name a path. Its download is written under the owner's exports folder, which the
file route serves to its owner and admins only."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from jobs.spec import SpecError, TrainSpec, name_problem, parse_spec
from jobs.spec_store import load_stored_spec
from jobs.spec_versions import SPEC_VERSION, UNVERSIONED, VERSION_KEY, migrate
from jobs.studio import Studio
from storage import audit_repo, presets_repo
from storage.access import LOCAL_OWNER, Person, acting_as, current_person
from storage.files import write_atomically
from storage.models import Preset

SUFFIXES = (".json", ".yaml", ".yml")
MAX_PRESET_FILE_BYTES = 64 << 10
"""A preset file's largest size: a spec is a few hundred bytes; this bound also lets a person who keeps as many
datasets as allowed still upload one (app/web/server.py)."""
log = logging.getLogger(__name__)


class PresetError(ValueError):
    """Every problem with a preset, in words, each naming its field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_preset(text: str, suffix: str, unversioned: int = SPEC_VERSION) -> dict:
    """A preset's fields from JSON or YAML text, migrated to today's version (`unversioned`: what a preset without
    a version is; a file a person writes today has none). Raises PresetError listing every problem."""
    try:
        values = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except RecursionError:
        raise PresetError(["file: nested too deeply"]) from None
    except (ValueError, yaml.YAMLError) as error:
        raise PresetError([f"file: not valid {'JSON' if suffix == '.json' else 'YAML'} ({error})"]) from None
    if not isinstance(values, dict):
        raise PresetError(["file: a preset is a mapping of spec fields to values"])
    values = migrate({VERSION_KEY: unversioned, **values})
    try:
        spec = parse_spec(values)
    except SpecError as error:
        raise PresetError([str(problem) for problem in error.problems]) from None
    return _preset_fields(values, spec)


def _preset_fields(values: dict, spec: TrainSpec) -> dict:
    """The fields a preset sets (the version aside: it is how they were read, not a setting)."""
    return {name: getattr(spec, name) for name in values if name in TrainSpec.model_fields and name != VERSION_KEY}


def reference(preset: Preset) -> str:
    """How the asker names a preset: its name when it is theirs, `owner/name` when someone shared it."""
    person = current_person()
    mine = person.name if person is not None else LOCAL_OWNER
    return preset.name if preset.owner == mine else f"{preset.owner}/{preset.name}"


def save_preset(studio: Studio, name: str, values: dict) -> str:
    """Save (or replace) the asker's own preset; returns its name."""
    name = (name or "").strip()
    if problem := name_problem(name):
        raise PresetError([f"name: {problem}"])
    fields = parse_preset(json.dumps(values), ".json")
    with studio.db.write() as session:
        presets_repo.put_preset(session, name, {VERSION_KEY: SPEC_VERSION, **fields})
    return name


def preset_names(studio: Studio) -> list[str]:
    with studio.db.read() as session:
        return [reference(preset) for preset in presets_repo.visible_presets(session)]


def _find(session, ref: str) -> Preset:
    owner, _, name = ref.rpartition("/")
    if not owner:
        person = current_person()
        owner = person.name if person is not None else LOCAL_OWNER
    preset = presets_repo.find_preset(session, owner, name) if owner and name else None
    if preset is None:
        raise PresetError([f"preset: no preset named '{ref}'"])
    return preset


def load_preset(studio: Studio, ref: str) -> dict:
    """A saved preset's fields, migrated from the version it was saved under (a row without one: version 1). One
    that today's rules refuse raises PresetError naming its problems, so the person can fix and save it again."""
    with studio.db.read() as session:
        stored = load_stored_spec(_find(session, ref or "").fields)
    if stored.spec is None:
        raise PresetError([f"preset '{ref}' was saved under older rules: {problem}" for problem in stored.problems])
    return _preset_fields(stored.fields, stored.spec)


def delete_preset(studio: Studio, ref: str) -> None:
    """Delete one's own preset (an admin: anyone's)."""
    with studio.db.write() as session:
        preset = _find(session, ref or "")
        person = current_person()
        if person is not None and not person.admin and preset.owner != person.name:
            raise PresetError([f"preset: '{ref}' is {preset.owner}'s; only they or an admin may delete it"])
        audit_repo.record(session, "preset_delete", person.name if person else None, f"{preset.owner}/{preset.name}")
        presets_repo.delete_preset(session, preset)


def share_preset(studio: Studio, ref: str, shared: bool) -> None:
    """Share a preset with everyone (or stop): an admin's decision, so no one publishes into others' lists."""
    person = current_person()
    if person is not None and not person.admin:
        raise PresetError(["preset: only an admin shares presets with everyone"])
    with studio.db.write() as session:
        preset = _find(session, ref or "")
        preset.shared = bool(shared)
        audit_repo.record(session, "preset_share" if shared else "preset_unshare", person.name if person else None,
                          f"{preset.owner}/{preset.name}")


def export_preset(studio: Studio, ref: str) -> Path:
    """The preset as a JSON file to download, under the asker's own exports folder."""
    with studio.db.read() as session:
        preset = _find(session, ref or "")
        fields, name, owner = load_stored_spec(preset.fields).fields, preset.name, preset.owner  # with its version
    person = current_person()
    target = studio.export_dir(f"preset-{owner}-{name}", person.name if person else owner) / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(target, json.dumps(fields, indent=2))


def adopt_preset_files(studio: Studio) -> int:
    """Presets saved as files by earlier versions (`<data dir>/presets/*.json`, from before accounts) become the local
    person's rows; the folder is then renamed aside. Returns how many were adopted."""
    folder = studio.settings.data_dir / "presets"
    if not folder.is_dir():
        return 0
    adopted = 0
    with acting_as(Person(LOCAL_OWNER, admin=True)):
        for path in sorted(folder.glob("*.json")):
            try:
                text = path.read_text(encoding="utf-8")
                save_preset(studio, path.stem, parse_preset(text, ".json", unversioned=UNVERSIONED))
                adopted += 1
            except (PresetError, OSError, UnicodeDecodeError) as error:
                log.warning("preset file %s not adopted: %s", path.name, error)
    shutil.move(str(folder), str(folder.with_name("presets.adopted")))
    return adopted
