"""The dataset store: each accepted dataset becomes a normalized `messages` JSONL the studio owns, named by its
sha256 and registered in the ledger under a user-facing name. Jobs name datasets, never server paths."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from jobs.data.errors import DatasetError
from jobs.data.formats import ParsedDataset, parse_file
from jobs.data.readers import ReadLimits
from jobs.spec import BUNDLED_DATASETS, EXAMPLE_DATASET, PIRATE_DATASET, name_problem
from jobs.studio import EXAMPLE_DATASET_FILE, PIRATE_DATASET_FILE, Studio
from storage import catalog
from storage.models import Dataset

BUNDLED_FILES = {EXAMPLE_DATASET: EXAMPLE_DATASET_FILE, PIRATE_DATASET: PIRATE_DATASET_FILE}


def store_parsed(parsed: ParsedDataset, datasets_dir: Path) -> tuple[Path, str]:
    """Write the normalized copy atomically, named by its sha256. Returns (path, sha256)."""
    payload = parsed.to_jsonl()
    digest = hashlib.sha256(payload).hexdigest()
    target = datasets_dir / f"{digest}.jsonl"
    if not target.exists():
        datasets_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(payload)
        partial.replace(target)
    return target, digest


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


def _register(studio: Studio, name: str, parsed: ParsedDataset) -> Imported:
    """Store and register `parsed` under `name`; the same content already stored is reused, whatever its name."""
    path, digest = store_parsed(parsed, studio.settings.datasets_dir)
    with studio.db.write() as session:
        existing = catalog.get_dataset_by_sha256(session, digest)
        if existing is not None:
            return Imported(dataset=existing, reused=True)
        if catalog.get_dataset_by_name(session, name) is not None:
            # A name always means one content, so a re-upload can never change what a queued job reads.
            raise DatasetError([f"name: a dataset named '{name}' already exists with other content; pick another "
                                f"name"])
        return Imported(reused=False, dataset=catalog.add_dataset(
            session, name=name, path=studio.relative(path), format=parsed.format, rows=len(parsed.rows),
            sha256=digest))


def read_limits(studio: Studio) -> ReadLimits:
    settings = studio.settings
    return ReadLimits(max_bytes=settings.max_upload_bytes, max_line_bytes=settings.max_line_bytes,
                      max_rows=settings.max_rows)


def import_dataset(studio: Studio, source: Path, name: str) -> Imported:
    """Validate an uploaded file and store its normalized copy. Raises DatasetError listing every problem, a name
    taken by other content among them."""
    name = name.strip()
    problems = []
    if problem := name_problem(name):
        problems.append(f"name: {problem}")
    elif name in BUNDLED_DATASETS:
        problems.append(f"name: '{name}' is reserved for a bundled dataset")
    try:
        parsed = parse_file(Path(source), read_limits(studio))
    except DatasetError as error:
        problems += error.problems
        parsed = None
    if problems:
        raise DatasetError(problems)
    return _register(studio, name, parsed)


def ensure_bundled_dataset(studio: Studio, name: str = EXAMPLE_DATASET) -> Dataset:
    """A bundled dataset, registered on first use."""
    with studio.db.read() as session:
        existing = catalog.get_dataset_by_name(session, name)
    if existing is not None:
        return existing
    return _register(studio, name, parse_file(BUNDLED_FILES[name])).dataset


def ensure_example_dataset(studio: Studio) -> Dataset:
    return ensure_bundled_dataset(studio, EXAMPLE_DATASET)


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
