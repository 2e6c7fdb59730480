"""The download: one zip per adapter that loads anywhere PEFT loads."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")


def build_adapter_zip(adapter_dir: Path, exports_dir: Path, name: str) -> Path:
    """Zip the adapter folder (weights, config, tokenizer, spec, final metrics, model card) atomically."""
    missing = [f for f in REQUIRED_FILES if not (adapter_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"adapter '{name}' is missing {', '.join(missing)} on disk")
    exports_dir.mkdir(parents=True, exist_ok=True)
    target = exports_dir / f"{name}.zip"
    partial = exports_dir / f".{name}.zip.partial"
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(adapter_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, arcname=f"{name}/{path.relative_to(adapter_dir)}")
    os.replace(partial, target)
    return target
