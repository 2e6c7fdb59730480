"""Where a base model comes from: the offline demo, a local directory, or a hub id. No torch here."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.spec import DEMO_BASE_MODEL

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def resolve_base_model(base_model: str, models_dir: Path) -> str:
    """A path or hub id that `from_pretrained` accepts. Builds the demo model on first use."""
    if base_model == DEMO_BASE_MODEL:
        from jobs.models.demo import ensure_demo_model

        return str(ensure_demo_model(models_dir))
    return base_model


def looks_local(base_model: str) -> bool:
    return base_model.startswith(("/", ".", "~")) or Path(base_model).expanduser().exists()


def base_model_problem(base_model: str) -> str | None:
    """Why this base model cannot be used, or None. Hub ids are only checked for shape (offline here)."""
    if base_model == DEMO_BASE_MODEL:
        return None
    if looks_local(base_model):
        path = Path(base_model).expanduser()
        if not path.is_dir():
            return f"no such directory: {base_model}"
        if not (path / "config.json").is_file():
            return f"{base_model} has no config.json, so it is not a transformers model directory"
        if not list(path.glob("*.safetensors")):
            return f"{base_model} has no .safetensors weights (only safetensors are loaded, never pickles)"
        return None
    if not HUB_ID.match(base_model):
        return (f"'{base_model}' is neither '{DEMO_BASE_MODEL}', an existing local directory, nor a hub id "
                f"of the form owner/name")
    return None
