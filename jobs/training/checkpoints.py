"""Checkpoints a run can resume from. A checkpoint counts only once marked complete (after the Trainer's save
returned and its files were fsynced; the marker records every file's size), and resuming picks the newest one
that still verifies (every recorded file there with its size, safetensors headers readable, the trainer state
parseable), by explicit path: never `resume_from_checkpoint=True`, which would pick a checkpoint torn by a kill
during its save, and never one damaged after it was written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from jobs.models.contents import readable_safetensors
from storage.file_modes import open_to_allowed_readers

COMPLETE_MARKER = "studio-complete.json"


def fsync_tree(root: Path) -> None:
    """Flush every file under `root` to disk, so a rename that publishes it never exposes half-written data; and
    let whom the data dir's modes allow read it (storage/file_modes.py)."""
    open_to_allowed_readers(root)
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def mark_complete(checkpoint: Path, step: int) -> None:
    fsync_tree(checkpoint)
    files = {str(p.relative_to(checkpoint)): p.stat().st_size for p in sorted(checkpoint.rglob("*")) if p.is_file()}
    (checkpoint / COMPLETE_MARKER).write_text(json.dumps({"step": step, "files": files}))


def checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.removeprefix("checkpoint-"))
    except ValueError:
        return -1


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it verifies."""
    try:
        marker = json.loads((checkpoint / COMPLETE_MARKER).read_text())
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError) as error:
        return f"no completion marker or trainer state ({type(error).__name__})"
    for name, size in marker.get("files", {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not the {size} written"
        if path.suffix == ".safetensors" and not readable_safetensors(path):
            return f"{name} has an unreadable safetensors header"
    return None


def newest_complete_checkpoint(checkpoints_dir: Path, report: Callable[..., None] = print) -> Path | None:
    """The newest checkpoint that verifies; each newer one that does not is reported (why) and skipped."""
    if not checkpoints_dir.is_dir():
        return None
    candidates = sorted((p for p in checkpoints_dir.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) >= 0),
                        key=checkpoint_step, reverse=True)
    for checkpoint in candidates:
        if not (checkpoint / COMPLETE_MARKER).is_file():
            continue  # torn by a kill during its save: never finished, nothing to report
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        report(f"checkpoint {checkpoint.name} is damaged ({problem}); trying the one before it", flush=True)
    if candidates:
        report("no usable checkpoint is left: training starts over from step 0", flush=True)
    return None
