"""Importing a dataset from the Hugging Face hub (id, config, split, revision) into the same normalized store as an
upload, with the revision it resolved to recorded. Where the hub is unreachable, a clear refusal."""

from __future__ import annotations

import re

from jobs.data.errors import DatasetError
from jobs.data.formats import Mapping, parse_records
from jobs.data.store import Imported, new_name_problems, read_limits, register_parsed
from jobs.studio import Studio

HUB_DATASET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def import_hub_dataset(studio: Studio, hub_id: str, name: str = "", config: str = "", split: str = "train",
                       revision: str = "", mapping: Mapping | None = None) -> Imported:
    hub_id, name = (hub_id or "").strip(), (name or "").strip() or (hub_id or "").strip().split("/")[-1]
    problems = []
    if not HUB_DATASET_ID.match(hub_id):
        problems.append(f"hub_id: '{hub_id}' is not a hub dataset id (owner/name)")
    problems += new_name_problems(name)
    if problems:
        raise DatasetError(problems)
    records, resolved = _fetch(hub_id, config, split or "train", revision, read_limits(studio).max_rows)
    parsed = parse_records(records, mapping)
    source = {"hub": hub_id, "config": config or None, "split": split or "train", "revision": resolved}
    return register_parsed(studio, name, parsed, source)


def _fetch(hub_id: str, config: str, split: str, revision: str, max_rows: int) -> tuple[list[dict], str | None]:
    try:
        from datasets import load_dataset
        from huggingface_hub import HfApi

        rows = load_dataset(hub_id, config or None, split=split, revision=revision or None)
        if len(rows) > max_rows:
            raise DatasetError([f"'{hub_id}' has {len(rows):,} rows; datasets are capped at {max_rows:,} "
                                f"(STUDIO_MAX_ROWS)"])
        resolved = HfApi().dataset_info(hub_id, revision=revision or None).sha
        return rows.to_list(), resolved
    except DatasetError:
        raise
    except Exception as error:  # the hub client's error types vary by version; the words say what happened
        raise DatasetError([_explain(hub_id, error)]) from None


def _explain(hub_id: str, error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    if any(word in text.lower() for word in ("offline", "connect", "couldn't reach", "resolve", "timed out")):
        return (f"hub: could not reach the Hugging Face hub to fetch '{hub_id}' from this machine; upload the "
                f"dataset as a file instead ({text[:200]})")
    return f"hub: could not load '{hub_id}' ({text[:300]})"
