"""The download: one zip per adapter that loads anywhere PEFT loads, or per whole model (full or freeze fine-tuning)
that loads anywhere transformers loads."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from jobs.models.contents import is_whole_model
from jobs.studio import Studio
from storage.files import private_partial
from storage.models import Adapter

REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
MODEL_REQUIRED_FILES = ("config.json",)
"""A whole model's weights are model.safetensors, or shards with model.safetensors.index.json."""


def build_adapter_zip(adapter_dir: Path, exports_dir: Path, name: str) -> Path:
    """Zip the adapter folder (weights, config, tokenizer, spec, final metrics, provenance, model card)."""
    required = MODEL_REQUIRED_FILES if is_whole_model(adapter_dir) else REQUIRED_FILES
    missing = [f for f in required if not (adapter_dir / f).is_file()]
    if is_whole_model(adapter_dir) and not any(adapter_dir.glob("model*.safetensors")):
        missing.append("model.safetensors")
    if missing:
        raise FileNotFoundError(f"adapter '{name}' is missing {', '.join(missing)} on disk")
    return zip_folder(adapter_dir, exports_dir / f"{name}.zip", name, zipfile.ZIP_DEFLATED)


def build_merged_zip(merged_dir: Path, exports_dir: Path, name: str) -> Path:
    """Zip a merged model (stored, not deflated: safetensors barely compress and the files are large)."""
    return zip_folder(merged_dir, exports_dir / f"{name}-merged.zip", f"{name}-merged", zipfile.ZIP_STORED)


def zip_folder(folder: Path, target: Path, top: str, compression: int) -> Path:
    """Write `folder` as `target` with every file under `top/`, atomically; reuse a zip newer than the folder."""
    newest = max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=0)
    if target.is_file() and target.stat().st_mtime >= newest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = private_partial(target)  # two people (or two app hosts) may build the same zip at once
    try:
        with zipfile.ZipFile(partial, "w", compression=compression) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    archive.write(path, arcname=f"{top}/{path.relative_to(folder)}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def gguf_export(studio: Studio, adapter: Adapter, quantization: str) -> Path | None:
    """The zip of the adapter's GGUF export at `quantization` (GGUFs, Modelfile, README); None while no export job
    has built it. Stored, not deflated: quantized weights do not compress."""
    from jobs.training.registry import gguf_exports, gguf_folder, gguf_zip_path

    if quantization not in gguf_exports(studio, adapter.id):
        return None
    target = gguf_zip_path(studio, adapter, adapter.name, quantization)
    return zip_folder(gguf_folder(studio, adapter.id, quantization), target, target.stem, zipfile.ZIP_STORED)


def adapter_export(studio: Studio, adapter: Adapter) -> Path:
    """The adapter's zip in its owner's exports folder (the page's and the CLI's download)."""
    folder = studio.export_dir(f"adapter-{adapter.id}", adapter.owner)
    return build_adapter_zip(studio.absolute(adapter.path), folder, adapter.name)


def merged_export(studio: Studio, adapter: Adapter) -> Path | None:
    """The merged model's zip beside the adapter's; None while no merge has finished."""
    if not adapter.merged_path:
        return None
    folder = studio.export_dir(f"adapter-{adapter.id}", adapter.owner)
    return build_merged_zip(studio.absolute(adapter.merged_path), folder, adapter.name)
