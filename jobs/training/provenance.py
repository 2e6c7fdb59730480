"""What a job trained on, recorded with the job and inside its adapter: the library versions, the base model's
revision (a hub snapshot) or content hash (a local folder), and the dataset's sha256. With these a result can be
traced and repeated."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from storage.files import write_atomically

LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "safetensors")
HASHES_FILE = ".content-hashes.json"
"""Kept in the models folder: hashing a large base once per (path, size, mtime) is enough."""


def library_versions() -> dict[str, str | None]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def base_model_record(base_model: str, base_path: str, models_dir: Path) -> dict:
    """The base as trained on: its name in the spec, where it was loaded from, and its revision or content hash."""
    record = {"name": base_model, "loaded_from": base_path}
    path = Path(base_path)
    if path.is_dir():
        if "snapshots" in path.parts:  # a hub download: the folder is named by the commit
            record["revision"] = path.name
        record["sha256"] = content_hash(path, models_dir)
    return record


def content_hash(model_dir: Path, models_dir: Path) -> str:
    """One sha256 over the folder's config and weights (safetensors, sorted by name), cached by size and mtime."""
    files = sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"]
    key = json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()])
    cache_file = Path(models_dir) / HASHES_FILE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        digest = hashlib.sha256()
        for file in files:
            if file.is_file():
                with file.open("rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        digest.update(block)
        cache[key] = digest.hexdigest()
        Path(models_dir).mkdir(parents=True, exist_ok=True)
        write_atomically(cache_file, json.dumps(cache))
    return cache[key]


def provenance(base: dict, dataset: dict, device: str) -> dict:
    return {"libraries": library_versions(), "python": platform.python_version(), "device": device,
            "base_model": base, "dataset": dataset}
