"""The dataset store: each accepted dataset becomes a normalized `messages` JSONL the studio owns, named by its
sha256 and registered in the ledger under a user-facing name. Jobs name datasets, never server paths."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jobs.data.formats import DatasetError, ParsedDataset, parse_file
from jobs.spec import EXAMPLE_DATASET, name_problem
from jobs.studio import EXAMPLE_DATASET_FILE, Studio
from storage import catalog
from storage.models import Dataset


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


def _register(studio: Studio, name: str, parsed: ParsedDataset) -> Dataset:
    path, digest = store_parsed(parsed, studio.settings.datasets_dir)
    with studio.db.write() as session:
        return catalog.add_dataset(session, name=name, path=studio.relative(path), format=parsed.format,
                                   rows=len(parsed.rows), sha256=digest)


def import_dataset(studio: Studio, source: Path, name: str) -> Dataset:
    """Validate an uploaded file and store its normalized copy. Raises DatasetError listing every problem."""
    name = name.strip()
    problems = []
    if problem := name_problem(name):
        problems.append(f"name: {problem}")
    if name == EXAMPLE_DATASET:
        problems.append(f"name: '{EXAMPLE_DATASET}' is reserved for the bundled example dataset")
    try:
        parsed = parse_file(Path(source))
    except DatasetError as error:
        problems += error.problems
        parsed = None
    if problems:
        raise DatasetError(problems)
    return _register(studio, name, parsed)


def ensure_example_dataset(studio: Studio) -> Dataset:
    with studio.db.read() as session:
        existing = catalog.get_dataset_by_name(session, EXAMPLE_DATASET)
    if existing is not None:
        return existing
    return _register(studio, EXAMPLE_DATASET, parse_file(EXAMPLE_DATASET_FILE))


def find_dataset(studio: Studio, name: str) -> Dataset | None:
    """The dataset registered under `name` (the example is registered on first use)."""
    if name == EXAMPLE_DATASET:
        ensure_example_dataset(studio)
    with studio.db.read() as session:
        return catalog.get_dataset_by_name(session, name)


def dataset_path(studio: Studio, name: str) -> Path | None:
    dataset = find_dataset(studio, name)
    return None if dataset is None else studio.absolute(dataset.path)


def dataset_names(studio: Studio) -> list[str]:
    """Every stored dataset's name, the example first."""
    with studio.db.read() as session:
        names = [d.name for d in catalog.list_datasets(session)]
    return [EXAMPLE_DATASET] + sorted({n for n in names if n != EXAMPLE_DATASET})
