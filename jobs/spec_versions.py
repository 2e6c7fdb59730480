"""The spec's versions and the migrations between them: a spec stored under older rules (a job row, a preset, a run
folder's training_spec.json) is brought up to today's before it is checked.

Version 1: every spec written before versions existed (no `spec_version` key).
Version 2: ranges, choices and the form's layout live on the type; the fields and their meanings are unchanged.
Version 3: the target preset 'embeddings+lm_head' is gone (TRL's trainers refuse LoRA on lm_head, so every job that
named it failed): it becomes 'embeddings' with lm_head trained fully (modules_to_save), what it was meant to do.

To change a field's name or meaning: raise SPEC_VERSION, and add `MIGRATIONS[old]`, a function from a spec of
version `old` (a dict, possibly partial: a preset) to one of version `old + 1`."""

from __future__ import annotations

from collections.abc import Callable

SPEC_VERSION = 3
VERSION_KEY = "spec_version"
UNVERSIONED = 1
"""What a stored spec without a version is: one written before versions existed."""


def _from_v1(fields: dict) -> dict:
    # v2 only moved the rules onto the type: every value of a v1 spec means the same under v2.
    return fields


RETIRED_TARGET_PRESET = "embeddings+lm_head"


def _from_v2(fields: dict) -> dict:
    if fields.get("target_modules") != RETIRED_TARGET_PRESET:
        return fields
    saved = fields.get("modules_to_save") or []
    saved = [*saved, "lm_head"] if isinstance(saved, list) and "lm_head" not in saved else saved
    return {**fields, "target_modules": "embeddings", "modules_to_save": saved}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _from_v1, 2: _from_v2}


def migrate(raw: dict) -> dict:
    """`raw` brought to SPEC_VERSION, when it names an older version (a spec without one is taken as written now;
    `jobs.spec_store` marks stored ones as version 1 first). A version that is not a known one is left for the
    type to refuse."""
    version = raw.get(VERSION_KEY, SPEC_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version not in MIGRATIONS:
        return raw
    fields = dict(raw)
    while version < SPEC_VERSION:
        fields = MIGRATIONS[version](fields)
        version += 1
    return {**fields, VERSION_KEY: SPEC_VERSION}
