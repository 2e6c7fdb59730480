"""The dataset store: each accepted dataset becomes a normalized `messages` JSONL the studio owns, named by its
sha256 and registered in the ledger under a user-facing name. Jobs name datasets, never server paths."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from jobs.data import quota
from jobs.data.errors import DatasetError
from jobs.data.formats import Mapping, ParsedDataset, parse_file
from jobs.data.readers import ReadLimits
from jobs.data.uploads import remove_upload, upload_cache_dir
from jobs.spec import BUNDLED_DATASETS, EXAMPLE_DATASET, PIRATE_DATASET, name_problem
from jobs.studio import EXAMPLE_DATASET_FILE, PIRATE_DATASET_FILE, Studio
from storage import catalog, jobs_repo
from storage.access import current_person, everyone, new_owner
from storage.files import write_atomically
from storage.models import Dataset

ORPHAN_AGE_S = 3600
DATASET_ROLES = ("dataset", "eval_dataset")  # the spec fields that name a stored dataset
BUNDLED_FILES = {EXAMPLE_DATASET: EXAMPLE_DATASET_FILE, PIRATE_DATASET: PIRATE_DATASET_FILE}


def store_parsed(parsed: ParsedDataset, datasets_dir: Path) -> tuple[Path, str]:
    """Write the normalized copy atomically, named by its sha256. Returns (path, sha256)."""
    payload = parsed.to_jsonl()
    digest = hashlib.sha256(payload).hexdigest()
    target = datasets_dir / f"{digest}.jsonl"
    _write_once(target, payload)
    return target, digest


def _write_once(target: Path, payload: bytes) -> bool:
    """Write `target` unless it exists (content-named: the same name is the same bytes). True: written now."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, payload)
    return True


def load_rows(path: Path) -> list[dict]:
    """Rows of a stored (already validated) dataset."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_sizes(rows: int, eval_fraction: float) -> tuple[int, int]:
    """(train rows, eval rows) for a dataset of `rows`: at least one eval row whenever eval is on."""
    if eval_fraction <= 0:
        return rows, 0
    eval_rows = max(1, round(rows * eval_fraction))
    return rows - eval_rows, eval_rows


@dataclass(frozen=True)
class Imported:
    dataset: Dataset
    """The stored dataset: the new one, or the one that already held the same content (`reused`)."""
    reused: bool

    def message(self, wanted: str) -> str:
        if self.reused:
            return (f"the same content is already stored as '{self.dataset.name}' ({self.dataset.rows} rows); "
                    f"nothing new was stored and '{wanted}' was not added: use '{self.dataset.name}'")
        return f"imported '{self.dataset.name}' ({self.dataset.rows} rows, {self.dataset.format})"


def register_parsed(studio: Studio, name: str, parsed: ParsedDataset, source: dict | None = None,
                    bundled: bool = False) -> Imported:
    """Store and register `parsed` under `name` for the person acting (`bundled`: for everyone); the same content
    they already stored is reused, whatever its name. Refused when the name is taken by other content or the person
    has no room left (jobs/data/quota.py)."""
    payload = parsed.to_jsonl()
    digest = hashlib.sha256(payload).hexdigest()
    path = studio.settings.datasets_dir / f"{digest}.jsonl"
    # Checked before the file is written, so a refused import never leaves a file behind...
    with studio.db.read() as session:
        existing = catalog.get_dataset_by_sha256(session, digest, None if bundled else new_owner())
        if existing is not None:
            return Imported(dataset=existing, reused=True)
        _refuse_unless_room(session, studio, name, len(payload), bundled)
    written = _write_once(path, payload)
    with studio.db.write() as session:
        existing = catalog.get_dataset_by_sha256(session, digest, None if bundled else new_owner())
        if existing is not None:
            return Imported(dataset=existing, reused=True)
        try:
            # ...and again under the writer's lock, so two imports at once cannot both take the last room.
            _refuse_unless_room(session, studio, name, len(payload), bundled)
        except DatasetError:
            if written and catalog.datasets_at(session, studio.relative(path)) == 0:
                path.unlink(missing_ok=True)
            raise
        _write_once(path, payload)  # a refused import of the same content may have just removed it
        return Imported(reused=False, dataset=catalog.add_dataset(
            session, name=name, path=studio.relative(path), format=parsed.format, rows=len(parsed.rows),
            sha256=digest, mapping=parsed.mapping.as_dict() if parsed.mapping else None, source=source,
            bundled=bundled))


def _refuse_unless_room(session: Session, studio: Studio, name: str, stored_bytes: int, bundled: bool) -> None:
    with everyone():  # names are unique across everyone's datasets
        taken = catalog.get_dataset_by_name(session, name) is not None
    if taken:
        # A name always means one content, so a re-upload can never change what a queued job reads.
        raise DatasetError([f"name: a dataset named '{name}' already exists with other content; pick another name"])
    if not bundled and (problem := quota.allowance_in(session, studio, current_person()).storing_problem(
            stored_bytes)):
        raise DatasetError([problem])


def read_limits(studio: Studio, allowed: quota.Allowance | None = None) -> ReadLimits:
    """The studio's limits on a dataset file; a person's account may set a smaller (or larger) upload size."""
    settings = studio.settings
    allowed = allowed or quota.allowance(studio, current_person())
    return ReadLimits(max_bytes=allowed.max_file_bytes, max_bytes_set_by=allowed.max_file_set_by,
                      max_line_bytes=settings.max_line_bytes, max_rows=settings.max_rows)


def new_name_problems(name: str) -> list[str]:
    """Why a new dataset may not take `name` (empty: it may, unless other content holds it)."""
    if problem := name_problem(name):
        return [f"name: {problem}"]
    if name in BUNDLED_DATASETS:
        return [f"name: '{name}' is reserved for a bundled dataset"]
    return []


def import_dataset(studio: Studio, source: Path, name: str, mapping: Mapping | None = None) -> Imported:
    """Validate an uploaded file and store its normalized copy, read as `mapping` says (None: as proposed from its
    columns). Raises DatasetError listing every problem, a name taken by other content among them."""
    name = name.strip()
    problems = new_name_problems(name)
    allowed = quota.allowance(studio, current_person())
    if problem := allowed.storing_problem(0):  # no dataset left to keep: not worth reading the file
        raise DatasetError([*problems, problem])
    try:
        parsed = parse_file(Path(source), read_limits(studio, allowed), mapping)
    except DatasetError as error:
        problems += error.problems
        parsed = None
    if problems:
        raise DatasetError(problems)
    imported = register_parsed(studio, name, parsed, {"file": Path(source).name})
    # The store holds its own copy now; Gradio's copy of an upload would otherwise stay in its cache for good.
    remove_upload(Path(source), upload_cache_dir())
    return imported


def ensure_bundled_dataset(studio: Studio, name: str = EXAMPLE_DATASET) -> Dataset:
    """A bundled dataset, registered on first use."""
    with studio.db.read() as session:
        existing = catalog.get_dataset_by_name(session, name)
    if existing is not None:
        return existing
    return register_parsed(studio, name, parse_file(BUNDLED_FILES[name]), bundled=True).dataset


def ensure_example_dataset(studio: Studio) -> Dataset:
    return ensure_bundled_dataset(studio, EXAMPLE_DATASET)


def ensure_bundled_datasets(studio: Studio) -> list[Dataset]:
    """Every bundled dataset, registered at start: registered on first use only, the pirate data for SmolLM2 was
    missing from the Datasets tab until a job or a plan named it."""
    return [ensure_bundled_dataset(studio, name) for name in BUNDLED_DATASETS]


def find_dataset(studio: Studio, name: str) -> Dataset | None:
    """The dataset registered under `name` (a bundled one is registered on first use)."""
    if name in BUNDLED_DATASETS:
        ensure_bundled_dataset(studio, name)
    with studio.db.read() as session:
        return catalog.get_dataset_by_name(session, name)


def dataset_path(studio: Studio, name: str) -> Path | None:
    dataset = find_dataset(studio, name)
    return None if dataset is None else studio.absolute(dataset.path)


def dataset_names(studio: Studio) -> list[str]:
    """Every stored dataset's name, the bundled ones first."""
    with studio.db.read() as session:
        names = [d.name for d in catalog.list_datasets(session)]
    return list(BUNDLED_DATASETS) + sorted(set(names) - set(BUNDLED_DATASETS))


def datasets_in_use(studio: Studio) -> set[str]:
    """Names of the datasets that queued or running jobs train or evaluate on (by the name or the id they were
    submitted with)."""
    with studio.db.read() as session, everyone():  # anyone's job keeps what it uses
        active = jobs_repo.active_jobs(session)
        names = {job.spec.get(role) for job in active for role in DATASET_ROLES}
        pinned = {(jobs_repo.pinned(job).get(role) or {}).get("id") for job in active for role in DATASET_ROLES}
        names |= {d.name for d in catalog.list_datasets(session) if d.id in pinned}
    return {name for name in names if name}


def rename_dataset(studio: Studio, name: str, new_name: str) -> Dataset:
    new_name = (new_name or "").strip()
    problems = []
    if problem := name_problem(new_name):
        problems.append(f"new_name: {problem}")
    if new_name in BUNDLED_DATASETS or name in BUNDLED_DATASETS:
        problems.append("name: the bundled datasets keep their names")
    if name in datasets_in_use(studio):
        problems.append(f"name: '{name}' is used by a queued or running job; rename it when they are done")
    if problems:
        raise DatasetError(problems)
    with studio.db.write() as session:
        dataset = catalog.get_dataset_by_name(session, name)
        if dataset is None:
            raise DatasetError([f"name: no dataset named '{name}'"])
        with everyone():
            taken = catalog.get_dataset_by_name(session, new_name) is not None
        if taken:
            raise DatasetError([f"new_name: a dataset is already named '{new_name}'"])
        dataset.name = new_name
        return dataset


def delete_dataset(studio: Studio, name: str) -> None:
    """Delete a dataset's row and its stored file together; refused while a queued or running job uses it."""
    if name in BUNDLED_DATASETS:
        raise DatasetError([f"name: '{name}' is bundled with the studio and stays"])
    if name in datasets_in_use(studio):
        raise DatasetError([f"name: '{name}' is used by a queued or running job; delete it when they are done"])
    with studio.db.write() as session:
        dataset = catalog.get_dataset_by_name(session, name)
        if dataset is None:
            raise DatasetError([f"name: no dataset named '{name}'"])
        path, stored = studio.absolute(dataset.path), dataset.path
        catalog.delete_dataset(session, dataset)
        shared = catalog.datasets_at(session, stored) > 0  # another owner uploaded the same content
    # After the row is gone: a crash in between leaves a file no row names, never a row without its file.
    if not shared:
        path.unlink(missing_ok=True)


def remove_orphan_files(studio: Studio) -> list[str]:
    """Stored files no dataset row names (a crash between a delete's commit and its unlink), removed at start; a
    file younger than an hour may belong to an import that is registering it right now, and stays."""
    with studio.db.read() as session:
        kept = {studio.absolute(d.path) for d in catalog.list_datasets(session)}
    old_enough = time.time() - ORPHAN_AGE_S
    stored = [*studio.settings.datasets_dir.glob("*.jsonl"), *studio.settings.datasets_dir.glob(".*.partial")]
    orphans = [p for p in stored if p.resolve() not in kept and p.stat().st_mtime < old_enough]  # partial: torn
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return [p.name for p in orphans]
