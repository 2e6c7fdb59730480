"""Specs read back from storage: a job row, a preset, a run folder's training_spec.json. Each is migrated from the
version it was written under (jobs.spec_versions) and checked against today's type; one that can no longer be valid
comes back with its problems in words, never as an exception, so a job list, a clone, a resume or a recovery shows
the problem instead of crashing on it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from jobs.spec import Problem, SpecError, TrainSpec, parse_spec
from jobs.spec_versions import UNVERSIONED, VERSION_KEY, migrate


class StoredSpecError(ValueError):
    """A stored spec that today's rules refuse; its text names every problem."""


@dataclass(frozen=True)
class StoredSpec:
    """A stored spec read back: its fields migrated to today's version (partial for a preset), the spec when they
    are valid, else the problems."""

    fields: dict
    version: int
    spec: TrainSpec | None = None
    problems: list[Problem] = field(default_factory=list)

    def problems_text(self) -> str:
        """The problems in words, for a person (each caller says what to do about them where it is)."""
        listed = "; ".join(str(problem) for problem in self.problems)
        return f"This stored spec (version {self.version}) is not valid under today's rules: {listed}."

    def require(self) -> TrainSpec:
        """The spec, or StoredSpecError with the problems in words (for a worker, which can only fail the job)."""
        if self.spec is None:
            raise StoredSpecError(self.problems_text())
        return self.spec


def load_stored_spec(stored: object, changes: dict | None = None) -> StoredSpec:
    """Migrate and check a stored spec (a dict without a version is version 1, written before versions existed);
    `changes`: fields written under today's version on top of it (a retry's overrides)."""
    if not isinstance(stored, dict):
        return StoredSpec({}, UNVERSIONED, problems=[Problem(field="spec", message="is not a JSON object")])
    version = stored.get(VERSION_KEY, UNVERSIONED)
    fields = {**migrate({VERSION_KEY: UNVERSIONED, **stored}), **(changes or {})}
    try:
        return StoredSpec(fields, version, spec=parse_spec(fields))
    except SpecError as error:
        return StoredSpec(fields, version, problems=error.problems)


def read_spec_file(path: Path) -> StoredSpec:
    """A run folder's or an adapter's training_spec.json; an unreadable file is a problem too."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        unreadable = Problem(field="spec", message=f"{path.name} is unreadable ({error})")
        return StoredSpec({}, UNVERSIONED, problems=[unreadable])
    return load_stored_spec(stored)
